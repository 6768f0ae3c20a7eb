import pytest

from graphdiff.nn import graph as graph_module


@pytest.fixture(autouse=True, params=["stacked", "per_head"])
def head_calls(request, monkeypatch):
    """Every kernel test runs twice: with the default, which stacks all heads of these small
    graphs into one block-diagonal call, and with every head in its own call, the path of
    long sequences."""
    if request.param == "per_head":  # both bounds: a graph without edges fits any edge bound
        monkeypatch.setattr(graph_module, "MAX_STACKED_EDGES", 0)
        monkeypatch.setattr(graph_module, "MAX_STACKED_NODES", 0)
    return request.param
