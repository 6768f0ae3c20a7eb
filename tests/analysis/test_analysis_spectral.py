"""Spectral quantities against closed forms, networkx and dense numpy."""

import math
import warnings

import networkx as nx
import numpy as np
import pytest
import scipy.sparse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import analysis
from analysis import spectral

SPARSE_N = spectral.DENSE_MAX_NODES + 476  # above the dense threshold: exercises the sparse solvers


def adjacency(graph: nx.Graph) -> scipy.sparse.csr_matrix:
    return scipy.sparse.csr_matrix(nx.to_scipy_sparse_array(graph, nodelist=sorted(graph.nodes)))


def cycle_spectrum(n):
    return np.sort(1 - np.cos(2 * np.pi * np.arange(n) / n))


def path_spectrum(n):
    return 1 - np.cos(np.pi * np.arange(n) / (n - 1))


CLOSED_FORMS = {
    # name: (graph, lambda_2, lambda_max)
    "cycle_small": (nx.cycle_graph(200), 1 - math.cos(2 * math.pi / 200), 2.0),
    "cycle_odd_sparse": (
        nx.cycle_graph(SPARSE_N + 1),
        1 - math.cos(2 * math.pi / (SPARSE_N + 1)),
        1 - math.cos(2 * math.pi * ((SPARSE_N + 1) // 2) / (SPARSE_N + 1)),
    ),
    "path_small": (nx.path_graph(300), 1 - math.cos(math.pi / 299), 2.0),
    "path_sparse": (nx.path_graph(SPARSE_N), 1 - math.cos(math.pi / (SPARSE_N - 1)), 2.0),
    "complete_small": (nx.complete_graph(40), 40 / 39, 40 / 39),
    "complete_sparse": (nx.complete_graph(1030), 1030 / 1029, 1030 / 1029),
    "hypercube_8": (nx.hypercube_graph(8), 2 / 8, 2.0),
    "hypercube_11": (nx.hypercube_graph(11), 2 / 11, 2.0),
    "star": (nx.star_graph(30), 1.0, 2.0),
    "complete_bipartite": (nx.complete_bipartite_graph(7, 12), 1.0, 2.0),
}


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_closed_forms(name):
    graph, lam2, lam_max = CLOSED_FORMS[name]
    ext = analysis.laplacian_extremes(adjacency(graph), k=2)
    assert ext.smallest[0] == 0.0
    assert ext.smallest[1] == pytest.approx(lam2, rel=1e-6, abs=1e-10)
    assert ext.largest[-1] == pytest.approx(lam_max, rel=1e-6)
    assert analysis.spectral_gap(adjacency(graph)) == pytest.approx(lam2, rel=1e-6, abs=1e-10)


def test_sparse_cycle_extremes_match_closed_form():
    n = SPARSE_N
    ext = analysis.laplacian_extremes(adjacency(nx.cycle_graph(n)), k=4)
    spectrum = cycle_spectrum(n)
    np.testing.assert_allclose(ext.smallest, spectrum[:4], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(ext.largest, spectrum[-4:], rtol=1e-6)
    assert ext.method == "shift-invert"


def test_sparse_expander_uses_lanczos_and_matches_networkx():
    # A random 6-regular graph is no band: the deflated Lanczos path.
    graph = nx.random_regular_graph(6, SPARSE_N, seed=3)
    ext = analysis.laplacian_extremes(adjacency(graph), k=2)
    assert ext.method == "lanczos"
    dense = np.linalg.eigvalsh(nx.normalized_laplacian_matrix(graph).toarray())
    assert ext.smallest[1] == pytest.approx(dense[1], rel=1e-6)
    assert ext.largest[-1] == pytest.approx(dense[-1], rel=1e-6)


def test_algebraic_connectivity_matches_networkx():
    graph = nx.connected_watts_strogatz_graph(400, 6, 0.1, seed=1)
    expected = nx.algebraic_connectivity(graph, normalized=True, tol=1e-12, method="tracemin_lu")
    assert analysis.spectral_gap(adjacency(graph)) == pytest.approx(expected, rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 40), p=st.floats(0.05, 0.9), seed=st.integers(0, 10_000))
def test_dense_spectrum_matches_networkx(n, p, seed):
    graph = nx.gnp_random_graph(n, p, seed=seed)
    expected = np.sort(nx.normalized_laplacian_spectrum(graph))
    k = max(1, n // 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", analysis.DisconnectedGraphWarning)
        ext = analysis.laplacian_extremes(adjacency(graph), k=k)
    np.testing.assert_allclose(ext.smallest, expected[:k], atol=1e-9)
    np.testing.assert_allclose(ext.largest, expected[-k:], atol=1e-9)
    assert ext.num_components == nx.number_connected_components(graph)


def test_direction_and_duplicates_do_not_matter():
    # One-way edges, duplicates and self-loops all describe the same simple graph.
    n = 50
    forward = np.array([np.arange(n - 1), np.arange(1, n)])
    messy = np.concatenate([forward, forward, np.array([np.arange(n), np.arange(n)])], axis=1)
    expected = 1 - math.cos(math.pi / (n - 1))
    assert analysis.spectral_gap(forward, n) == pytest.approx(expected, rel=1e-9)
    assert analysis.spectral_gap(messy, n) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("n", [300, SPARSE_N])
def test_disconnected_graph_has_zero_gap_and_is_flagged(n):
    graph = nx.disjoint_union(nx.cycle_graph(n // 2), nx.path_graph(n - n // 2))
    with pytest.warns(analysis.DisconnectedGraphWarning, match="2 connected components"):
        assert analysis.spectral_gap(adjacency(graph)) == 0.0
    ext = analysis.laplacian_extremes(adjacency(graph), k=3)
    assert ext.num_components == 2
    assert list(ext.smallest[:2]) == [0.0, 0.0]
    # The third eigenvalue is the smaller of the two components' own lambda_2.
    expected = min(1 - math.cos(2 * math.pi / (n // 2)), 1 - math.cos(math.pi / (n - n // 2 - 1)))
    assert ext.smallest[2] == pytest.approx(expected, rel=1e-6)


def test_isolated_nodes_count_as_components():
    edge_index = np.array([[0, 1], [1, 0]])
    with pytest.warns(analysis.DisconnectedGraphWarning):
        assert analysis.spectral_gap(edge_index, 4) == 0.0
    assert analysis.laplacian_extremes(edge_index, 4, k=4).smallest.tolist() == [0.0, 0.0, 0.0, 2.0]


@pytest.mark.parametrize("d,n", [(3, 400), (4, SPARSE_N), (8, SPARSE_N)])
def test_random_regular_graphs_are_nearly_ramanujan(d, n):
    graph = nx.random_regular_graph(d, n, seed=d)
    result = analysis.adjacency_lambda(adjacency(graph))
    assert result.mean_degree == d
    if d == 8:  # one sparse (Lanczos) result against a dense reference
        dense = np.linalg.eigvalsh(nx.to_numpy_array(graph))
        assert result.lam == pytest.approx(max(abs(dense[-2]), abs(dense[0])), rel=1e-6)
    # Friedman: lambda <= 2 sqrt(d - 1) + o(1); finite-n fluctuations are O(n^-2/3).
    assert result.ramanujan_ratio <= 1.03
    assert result.ramanujan_ratio == pytest.approx(result.lam / (2 * math.sqrt(d - 1)))


def test_adjacency_lambda_closed_forms():
    # Complete graph K_n: mu = n - 1 once, -1 otherwise. Cycle C_n (even): mu_n = -2.
    assert analysis.adjacency_lambda(adjacency(nx.complete_graph(30))).lam == pytest.approx(1.0)
    assert analysis.adjacency_lambda(adjacency(nx.cycle_graph(64))).lam == pytest.approx(2.0)
    # C_64 is 2-regular with lambda = 2 = 2 sqrt(d - 1): exactly on the Ramanujan bound.
    assert analysis.adjacency_lambda(
        adjacency(nx.cycle_graph(64))
    ).ramanujan_ratio == pytest.approx(1.0)


def test_matrices_and_reordering_are_built_once_per_graph(monkeypatch):
    # The gap, epsilon and adjacency spectrum of one banded graph share one reverse Cuthill-McKee
    # ordering and one permuted Laplacian; results match the closed forms of the cycle.
    orderings = []
    rcm = analysis.graph.reverse_cuthill_mckee

    def counted(*args, **kwargs):
        orderings.append(args)
        return rcm(*args, **kwargs)

    monkeypatch.setattr(analysis.graph, "reverse_cuthill_mckee", counted)
    n = SPARSE_N
    g = analysis.as_graph(adjacency(nx.cycle_graph(n)))
    permuted = g.permuted_laplacian
    lam2 = 1 - math.cos(2 * math.pi / n)  # n even: lambda_max = 2
    assert analysis.spectral_gap(g) == pytest.approx(lam2, rel=1e-6)
    assert analysis.complete_graph_epsilon(g) == pytest.approx((2 - lam2) / (2 + lam2), rel=1e-9)
    assert analysis.adjacency_lambda(g).lam == pytest.approx(2.0, rel=1e-6)
    assert len(orderings) == 1
    assert g.permuted_laplacian is permuted and g.normalized_adjacency() is g.normalized_adjacency()


def test_dense_spectra_refuse_large_graphs():
    g = analysis.as_graph(adjacency(nx.path_graph(spectral.DENSE_MAX_NODES + 1)))
    with pytest.raises(ValueError, match="dense"):
        g.laplacian_spectrum
    with pytest.raises(ValueError, match="dense"):
        g.adjacency_spectrum
    small = analysis.as_graph(adjacency(nx.path_graph(30)))
    np.testing.assert_allclose(small.laplacian_spectrum, path_spectrum(30), atol=1e-12)
    np.testing.assert_allclose(
        small.adjacency_spectrum, np.sort(2 * np.cos(np.pi * np.arange(1, 31) / 31)), atol=1e-12
    )


def dense_laplacian_spectrum(graph: nx.Graph) -> np.ndarray:
    return np.linalg.eigvalsh(
        nx.normalized_laplacian_matrix(graph, nodelist=sorted(graph.nodes)).toarray()
    )


@pytest.mark.parametrize(
    "name, graph, k, method",
    [
        # hub + C_1099: every 1 - (2/3) cos(2 pi j / 1099) twice, no band (the hub): Lanczos
        ("wheel", nx.wheel_graph(1100), 3, "lanczos"),
        # each eigenvalue of C_600 twice, and twice over for the two copies: shift-invert
        (
            "two cycles",
            nx.disjoint_union(nx.cycle_graph(600), nx.cycle_graph(600)),
            8,
            "shift-invert",
        ),
    ],
)
def test_repeated_eigenvalues_are_counted_above_the_dense_size(name, graph, k, method):
    # Single-vector Lanczos finds each distinct eigenvalue once; the answer counts repeats.
    ext = analysis.laplacian_extremes(adjacency(graph), k=k)
    assert ext.method == method
    dense = dense_laplacian_spectrum(graph)
    np.testing.assert_allclose(ext.smallest, dense[:k], rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(ext.largest, dense[-k:], rtol=1e-7)


def test_repeated_top_adjacency_eigenvalue_of_a_disconnected_graph():
    # Two 6-regular components: mu_1 = mu_2 = 6, so lambda = 6 (the dense convention).
    graph = nx.disjoint_union(
        nx.random_regular_graph(6, 600, seed=1), nx.random_regular_graph(6, 600, seed=2)
    )
    assert analysis.adjacency_lambda(adjacency(graph)).lam == pytest.approx(6.0, rel=1e-9)


def test_k_up_to_n_above_the_dense_size():
    # The docstring allows 1 <= k <= n: a k too large for the sparse solvers, or large enough
    # that the dense solver is faster, is solved densely (star K_{1,n-1}: eigenvalues 0,
    # 1 (n - 2 times), 2).
    n = spectral.DENSE_MAX_NODES + 6
    star = adjacency(nx.star_graph(n - 1))
    expected = np.array([0.0] + [1.0] * (n - 2) + [2.0])
    for k in (n, n - 1, n // spectral.SPARSE_MAX_K_DIVISOR + 1, spectral.DENSE_ABOVE_K + 1):
        ext = analysis.laplacian_extremes(star, k=k)
        assert ext.method == "dense"
        np.testing.assert_allclose(ext.smallest, expected[:k], atol=1e-9)
        np.testing.assert_allclose(ext.largest, expected[-k:], atol=1e-9)


def test_k_too_large_for_any_solver_is_refused_up_front():
    n = spectral.DENSE_FALLBACK_MAX_NODES + 4
    path = np.array([np.arange(n - 1), np.arange(1, n)])
    with pytest.raises(ValueError, match=r"k=2000 .* sparse solvers take k <= n // 4 = 1025"):
        analysis.laplacian_extremes(path, n, k=2000)


def test_an_eigenvalue_repeated_too_often_for_the_sparse_search(monkeypatch):
    # Two wheels: every eigenvalue of a wheel four times. One deflated search allowed and no
    # block solve: it cannot count them all, so the graph is solved densely (or, above the
    # dense fallback's size, refused).
    graph = nx.disjoint_union(nx.wheel_graph(540), nx.wheel_graph(540))
    k = 8
    monkeypatch.setattr(spectral, "MAX_ROUNDS", 1)
    ext = analysis.laplacian_extremes(adjacency(graph), k=k)
    assert ext.method == "dense"
    dense = dense_laplacian_spectrum(graph)
    np.testing.assert_allclose(ext.smallest, dense[:k], atol=1e-9)
    monkeypatch.setattr(spectral, "DENSE_FALLBACK_MAX_NODES", graph.number_of_nodes() - 1)
    with pytest.raises(spectral.RepeatedEigenvalueError, match="repeated eigenvalues"):
        analysis.laplacian_extremes(adjacency(graph), k=k)


def test_an_eigenvalue_of_the_iterated_operator_at_zero_settles():
    # Star K_{1,n-1}: L has 1 n - 2 times, i.e. M = I - L has 0. The first search finds the
    # copies; further copies in the complement differ from 0 by rounding alone (1e-13), which
    # a margin relative to 0 counted as new values for ever (RepeatedEigenvalueError).
    n, k = spectral.DENSE_MAX_NODES + 76, 20
    ext = analysis.laplacian_extremes(adjacency(nx.star_graph(n - 1)), k=k)
    assert ext.method == "lanczos"
    np.testing.assert_allclose(ext.smallest, [0.0] + [1.0] * (k - 1), atol=1e-9)
    np.testing.assert_allclose(ext.largest, [1.0] * (k - 1) + [2.0], atol=1e-9)


@pytest.fixture
def small_limits(monkeypatch):
    """The sparse solvers, and the block solve for any k > 4, on a few hundred nodes."""
    monkeypatch.setattr(spectral, "DENSE_MAX_NODES", 60)
    monkeypatch.setattr(spectral, "DENSE_FALLBACK_MAX_NODES", 60)
    monkeypatch.setattr(spectral, "BLOCK_ABOVE_K", 4)
    blocks = []
    lobpcg = spectral._lobpcg

    def counted(*args):
        blocks.append(args[2].shape[1])
        return lobpcg(*args)

    monkeypatch.setattr(spectral, "_lobpcg", counted)
    return blocks


def copies(graph: nx.Graph, count: int) -> nx.Graph:
    return nx.disjoint_union_all([graph] * count)


@pytest.mark.parametrize(
    "name, graph, k",
    [
        # closed forms: 0, 1 (n - 2 times), 2
        ("star", nx.star_graph(299), 40),
        ("complete bipartite", nx.complete_bipartite_graph(120, 180), 40),
        # each 1 - cos(2 pi j / 25) twice per cycle, 12 cycles (banded: shift-invert)
        ("cycles", copies(nx.cycle_graph(25), 12), 40),
        # 10 identical 3-regular graphs (no band: Lanczos), every eigenvalue 10 times
        ("components", copies(nx.random_regular_graph(3, 30, seed=5), 10), 30),
    ],
)
def test_many_copies_are_counted_above_the_dense_size(small_limits, name, graph, k):
    ext = analysis.laplacian_extremes(adjacency(graph), k=k)
    assert ext.method in ("lanczos", "shift-invert")
    dense = dense_laplacian_spectrum(graph)
    np.testing.assert_allclose(ext.smallest, dense[:k], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ext.largest, dense[-k:], rtol=1e-7, atol=1e-9)
    if name in ("cycles", "components"):  # the copies Lanczos missed were resolved in a block
        assert small_limits and min(small_limits) > k - 10  # block > the count wanted at that end


# The fixture only patches module constants: sharing it between examples is intended.
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(count=st.integers(4, 10), m=st.integers(8, 30), k=st.integers(5, 30))
def test_identical_cycles_match_the_closed_form(small_limits, count, m, k):
    # count copies of C_m: the spectrum of C_m, each value count times (disconnected: the first
    # count values are the kernel, exactly 0).
    k = min(k, count * m // spectral.SPARSE_MAX_K_DIVISOR)
    ext = analysis.laplacian_extremes(adjacency(copies(nx.cycle_graph(m), count)), k=k)
    spectrum = np.sort(np.tile(cycle_spectrum(m), count))
    np.testing.assert_allclose(ext.smallest, spectrum[:k], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ext.largest, spectrum[-k:], rtol=1e-7, atol=1e-9)


def test_a_block_solve_that_does_not_converge_raises(small_limits, monkeypatch):
    monkeypatch.setattr(spectral, "BLOCK_MAXITER", 1)
    monkeypatch.setattr(spectral, "BLOCK_BURST", 1)
    graph = copies(nx.random_regular_graph(3, 30, seed=5), 10)
    with pytest.raises(spectral.RepeatedEigenvalueError, match="LOBPCG"):
        analysis.laplacian_extremes(adjacency(graph), k=30)
    # Small enough for the dense solver: the uncounted copies go there, as after a search that
    # does not settle.
    monkeypatch.setattr(spectral, "DENSE_FALLBACK_MAX_NODES", graph.number_of_nodes())
    ext = analysis.laplacian_extremes(adjacency(graph), k=30)
    assert ext.method == "dense"
    np.testing.assert_allclose(ext.smallest, dense_laplacian_spectrum(graph)[:30], atol=1e-9)
