import pytest

import graphdiff.cache


@pytest.fixture
def fresh_cache(monkeypatch):
    """An empty cache of its own in place of the process-wide one, so that what a test counts
    does not depend on the tests that ran before it."""
    cache = graphdiff.cache.StructureCache()
    monkeypatch.setattr(graphdiff.cache, "CACHE", cache)
    return cache
