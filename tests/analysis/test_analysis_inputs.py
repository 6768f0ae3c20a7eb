"""Every input form gives the same answer; bad input raises a clear error before any work."""

import math

import numpy as np
import pytest
import scipy.sparse
import torch

import analysis

N = 40
EDGES = np.array([np.arange(N - 1), np.arange(1, N)])  # a path, one direction only


class DuckPattern:
    """Anything with to_scipy(n) is a pattern."""

    def to_scipy(self, n):
        return scipy.sparse.csr_matrix(
            (np.ones(n - 1), (np.arange(1, n), np.arange(n - 1))), shape=(n, n)
        )


def test_all_input_forms_agree():
    expected = analysis.spectral_gap(EDGES, N)
    matrix = scipy.sparse.csr_matrix((np.ones(N - 1), (EDGES[1], EDGES[0])), shape=(N, N))
    for graph, n in [
        (torch.from_numpy(EDGES), N),
        (EDGES.tolist(), N),
        (matrix, None),
        (matrix.tocoo(), N),
        (DuckPattern(), N),
        (analysis.as_graph(EDGES, N), None),
    ]:
        assert analysis.spectral_gap(graph, n) == pytest.approx(expected, rel=1e-12)


def test_patterns_from_graphdiff():
    patterns = pytest.importorskip("graphdiff.patterns")
    p = patterns.Window(4) | patterns.Global(1)
    assert analysis.spectral_gap(p, 64) == pytest.approx(analysis.spectral_gap(p(64), 64))
    assert analysis.hops_to_cover(p, 64) == 2  # every token reaches token 0 and back


def test_caller_matrix_is_not_modified():
    matrix = scipy.sparse.csr_matrix(np.array([[0, 2.0], [0.5, 0]]))
    analysis.spectral_gap(matrix)
    assert matrix.data.tolist() == [2.0, 0.5]


@pytest.mark.parametrize(
    "graph,n,match",
    [
        (np.array([[0, -1], [1, 2]]), 5, r"source indices must lie in \[0, 4\] .*\[-1, 0\]"),
        (np.array([[0, 7], [1, 2]]), 5, r"source indices must lie in \[0, 4\] .*\[0, 7\]"),
        (np.array([[0, 1], [1, 2]]), 2, r"target indices must lie in \[0, 1\]"),
        (np.zeros((3, 4), dtype=int), 5, r"shape \[2, E\]"),
        (EDGES, None, "n .* is required"),
        (EDGES, 0, "empty"),
        (scipy.sparse.csr_matrix((3, 4)), None, "square"),
        (scipy.sparse.csr_matrix((0, 0)), None, "empty"),
        (scipy.sparse.csr_matrix((3, 3)), 4, "disagrees"),
        (DuckPattern(), None, "n .* is required"),
    ],
)
def test_bad_input_raises_value_error(graph, n, match):
    with pytest.raises(ValueError, match=match):
        analysis.spectral_gap(graph, n)
    with pytest.raises(ValueError, match=match):
        analysis.receptive_field(graph, n, hops=2)


def test_bad_arguments():
    with pytest.raises(TypeError, match="integer dtype"):
        analysis.spectral_gap(np.array([[0.5, 1.0], [1.0, 0.0]]), 5)
    with pytest.raises(TypeError, match="pattern, an edge_index"):
        analysis.spectral_gap(object(), 3)
    with pytest.raises(TypeError, match="n must be an integer"):
        analysis.spectral_gap(EDGES, 40.0)
    with pytest.raises(ValueError, match="n >= 2"):
        analysis.spectral_gap(np.zeros((2, 0), dtype=int), 1)
    with pytest.raises(ValueError, match="k must be in"):
        analysis.laplacian_extremes(EDGES, N, k=N + 1)
    with pytest.raises(ValueError, match="hops must be"):
        analysis.receptive_field(EDGES, N, hops=-1)
    # Every integer argument: TypeError when not an integer, ValueError when out of range.
    with pytest.raises(TypeError, match="hops must be an integer >= 0"):
        analysis.diffusion_spectrum([0.5], hops=1.5)
    with pytest.raises(TypeError, match="samples must be an integer >= 1"):
        analysis.hops_to_cover(EDGES, N, samples=True)
    with pytest.raises(ValueError, match=r"k must be in \[1, 40\]"):
        analysis.attention_spectrum(np.ones(N - 1), EDGES, N, k=0)
    with pytest.raises(ValueError, match="alpha must be"):
        analysis.diffusion_spectrum([0.5], alpha=1.5)
    with pytest.raises(ValueError, match="kernel must be"):
        analysis.diffusion_spectrum([0.5], kernel="gauss")
    # As the layer refuses them: t = inf made every heat eigenvalue nan, silently.
    with pytest.raises(ValueError, match="t must be a finite number >= 0"):
        analysis.diffusion_spectrum([0.5], kernel="heat", t=math.inf)
    with pytest.raises(ValueError, match="alpha must be"):
        analysis.diffusion_spectrum([0.5], alpha=True)
    with pytest.raises(ValueError, match="hops=None"):
        analysis.diffusion_spectrum([0.5], alpha=0.0, hops=None)
    with pytest.raises(ValueError, match=r"attn must have shape"):
        analysis.attention_spectrum(np.ones(3), EDGES, N)
