"""Pattern statistics against networkx, with and without self-loops."""

import networkx as nx
import pytest

from graphdiff.patterns import Full, Global, Random, Window, pattern_stats


@pytest.mark.parametrize("self_loops", [True, False])
@pytest.mark.parametrize(
    "pattern,n",
    [
        (Window(4) | Global(2) | Random(2, seed=1), 17),
        (Global(1, last=1), 6),
        (Full(), 5),
        (Window(2).causal(), 9),
        (Window(0), 1),
    ],
)
def test_pattern_stats_match_networkx(pattern, n, self_loops):
    edge_index = pattern(n, self_loops)
    graph = nx.DiGraph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from(edge_index.t().tolist())
    in_degrees = [graph.in_degree(i) for i in range(n)]
    others = lambda i, neighbours: set(neighbours) - {i}  # noqa: E731
    everyone_else = lambda i: set(range(n)) - {i}  # noqa: E731
    expected_global = sum(
        others(i, graph.predecessors(i)) == everyone_else(i)
        and others(i, graph.successors(i)) == everyone_else(i)
        for i in range(n)
    )
    stats = pattern_stats(edge_index, n)
    assert stats.tokens == n and stats.edges == graph.number_of_edges()
    assert stats.edges_per_token == pytest.approx(graph.number_of_edges() / n)
    assert (stats.min_in_degree, stats.max_in_degree) == (min(in_degrees), max(in_degrees))
    assert stats.mean_in_degree == pytest.approx(sum(in_degrees) / n)
    assert stats.symmetric == all(graph.has_edge(v, u) for u, v in graph.edges)
    assert stats.global_tokens == expected_global


def test_pattern_stats_count_global_tokens_without_self_loops():
    assert pattern_stats(Global(1)(4, self_loops=False), 4).global_tokens == 1
    assert pattern_stats(Full()(4, self_loops=False), 4).global_tokens == 4


def test_pattern_stats_need_a_token():
    with pytest.raises(ValueError, match="n must be >= 1"):
        pattern_stats(Window(0)(1)[:, :0], 0)
