"""Epsilon, Cheeger bounds and reachability against closed forms and dense boolean powers."""

import math

import networkx as nx
import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st

import analysis
from analysis import expansion


def adjacency(graph):
    return scipy.sparse.csr_matrix(nx.to_scipy_sparse_array(graph, nodelist=sorted(graph.nodes)))


def dense_receptive_field(edge_index, n, hops):
    """Reference: fraction of nonzeros of (I + A)^k by repeated boolean products."""
    a = np.eye(n, dtype=bool)
    a[edge_index[1], edge_index[0]] = True  # A[i, j] for the edge j -> i
    reach, out = np.eye(n, dtype=bool), []
    for _ in range(hops + 1):
        out.append(reach.mean())
        reach = (reach.astype(np.int64) @ a.astype(np.int64)) > 0
    return np.array(out)


def test_complete_graph_epsilon_closed_forms():
    assert analysis.complete_graph_epsilon(adjacency(nx.complete_graph(50))) == pytest.approx(
        0.0, abs=1e-12
    )
    # Hypercube Q_d: lambda_2 = 2/d, lambda_max = 2.
    assert analysis.complete_graph_epsilon(adjacency(nx.hypercube_graph(6))) == pytest.approx(
        (2 - 2 / 6) / (2 + 2 / 6)
    )
    with pytest.warns(analysis.DisconnectedGraphWarning):
        assert analysis.complete_graph_epsilon(np.array([[0], [1]]), 3) == 1.0


def test_gap_and_epsilon_match_closed_forms():
    # Hypercube Q_6: lambda_2 = 2/6, lambda_max = 2. A disconnected graph: (0, 1), as the public
    # functions.
    lam2, epsilon = expansion.gap_and_epsilon(analysis.as_graph(adjacency(nx.hypercube_graph(6))))
    assert (lam2, epsilon) == pytest.approx((2 / 6, (2 - 2 / 6) / (2 + 2 / 6)))
    assert expansion.gap_and_epsilon(analysis.as_graph(np.array([[0], [1]]), 3)) == (0.0, 1.0)


def test_cheeger_bounds_bracket_the_conductance_of_a_cycle():
    n = 40
    lower, upper = analysis.cheeger_bounds(adjacency(nx.cycle_graph(n)))
    # Best cut of a cycle: two halves, 2 cut edges over volume n.
    conductance = 2 / n
    assert lower <= conductance <= upper
    lam2 = 1 - math.cos(2 * math.pi / n)
    assert (lower, upper) == pytest.approx((lam2 / 2, math.sqrt(2 * lam2)))


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 30), m=st.integers(0, 80), hops=st.integers(0, 6), seed=st.integers(0, 1000)
)
def test_receptive_field_equals_dense_boolean_powers(n, m, hops, seed):
    rng = np.random.default_rng(seed)
    edge_index = rng.integers(0, n, size=(2, m))
    expected = dense_receptive_field(edge_index, n, hops)
    np.testing.assert_allclose(analysis.receptive_field(edge_index, n, hops), expected)
    # The report's single search gives the same field and the first k where the field reaches 1.
    field, covered = expansion.field_and_cover(analysis.as_graph(edge_index, n), hops)
    np.testing.assert_allclose(field, expected)
    full = dense_receptive_field(edge_index, n, n)  # a path has at most n - 1 edges
    assert covered == (int(np.argmax(full == 1.0)) if full[-1] == 1.0 else None)


def test_receptive_field_is_directed():
    # A causal chain j -> j + 1: query i hears keys 0..i, so only about half the pairs.
    n = 10
    chain = np.array([np.arange(n - 1), np.arange(1, n)])
    field = analysis.receptive_field(chain, n, hops=n)
    assert field[-1] == pytest.approx((n * (n + 1) / 2) / n**2)
    assert analysis.hops_to_cover(chain, n) is None
    both = np.concatenate([chain, chain[::-1]], axis=1)
    assert analysis.hops_to_cover(both, n) == n - 1


@pytest.mark.parametrize("n,half", [(100, 4), (257, 8), (3000, 16)])
def test_hops_to_cover_a_window_is_its_diameter(n, half):
    # Window of half width h on a path: the ends are ceil((n - 1) / h) hops apart. n = 3000 uses
    # evenly spaced sampled queries, which include both ends.
    offsets = np.arange(-half, half + 1)
    i = np.repeat(np.arange(n), offsets.size)
    j = i + np.tile(offsets, n)
    keep = (j >= 0) & (j < n)
    edge_index = np.stack([j[keep], i[keep]])
    assert analysis.hops_to_cover(edge_index, n) == math.ceil((n - 1) / half)


def test_sampled_receptive_field_matches_exact_on_a_cycle():
    # Vertex-transitive: every query has the same ball, so any sample gives the exact answer.
    n = 5000
    graph = adjacency(nx.cycle_graph(n))
    sampled = analysis.receptive_field(graph, hops=4, samples=16)
    np.testing.assert_allclose(sampled, (2 * np.arange(5) + 1) / n)
