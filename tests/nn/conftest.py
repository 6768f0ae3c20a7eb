import pytest

from graphdiff.nn import kernels


@pytest.fixture(params=["whole", "chunked"])
def chunking(request, monkeypatch):
    """Run a test twice: with each head's channels in one chunk (what small graphs
    get) and split into one-element chunks (what long sequences get, taken to the limit)."""
    if request.param == "chunked":
        monkeypatch.setattr(kernels, "_SMALL_OPERAND_BYTES", 0)
        monkeypatch.setattr(kernels, "_CACHE_LINE_BYTES", 1)
    return request.param
