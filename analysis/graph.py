"""Input normalisation: patterns, edge indices and scipy matrices become one :class:`Graph`.

Every analysis function accepts

* a pattern (any object with ``to_scipy(n)``, e.g. :class:`graphdiff.patterns.Pattern`) with a
  length ``n``;
* an ``edge_index`` (torch tensor, numpy array or nested list of shape ``[2, E]``, row 0 the
  source ``j``, row 1 the target ``i``) with the number of nodes ``n``;
* a square scipy sparse matrix ``M [n, n]`` with ``M[i, j] != 0`` for the edge ``j -> i``
  (the convention of ``Pattern.to_scipy``); ``n``, if given, must match;
* a :class:`Graph` built earlier, so that several quantities of one large pattern share the
  conversion (``n`` is then ignored unless it disagrees).

Spectral quantities use the symmetrised simple graph ``W`` (docs/design.md, Overview): an
undirected edge ``{i, j}`` wherever ``j -> i`` or ``i -> j``, weight 1, no self-loops.
Reachability uses the directed adjacency as given.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import numpy as np
import scipy.sparse
from scipy.sparse.csgraph import connected_components, reverse_cuthill_mckee

from graphdiff.checks import check_edge_index, check_int

DENSE_MAX_NODES = 1024  # dense n x n work (full spectra) only up to here: 8 MiB a matrix


class Graph:
    """A validated graph on ``n`` nodes, with lazily built views shared between analyses.

    Every view is built on first use and kept, so that several quantities of one graph (its
    gap, epsilon and adjacency spectrum in a report row) pay for each matrix and spectrum once.
    The views are shared: read them, never modify them in place.

    Attributes:
        n: number of nodes.
        directed: ``[n, n]`` CSR, ``directed[i, j] = 1`` for every edge ``j -> i`` (float64,
            binary, self-loops kept as given).
    """

    def __init__(self, directed: scipy.sparse.csr_matrix):
        self.n = directed.shape[0]
        self.directed = directed

    @functools.cached_property
    def adjacency(self) -> scipy.sparse.csr_matrix:
        """``W [n, n]``: symmetric, binary, zero diagonal (float64 CSR)."""
        w = (self.directed + self.directed.T).tocsr()
        w.setdiag(0)
        w.eliminate_zeros()
        w.data[:] = 1.0
        return w

    @functools.cached_property
    def degrees(self) -> np.ndarray:
        """``d [n]``: degrees in ``W`` (float64)."""
        return np.diff(self.adjacency.indptr).astype(np.float64)

    @functools.cached_property
    def components(self) -> tuple[int, np.ndarray]:
        """``(count, labels [n])`` of the connected components of ``W``."""
        return connected_components(self.adjacency, directed=False)

    @property
    def num_components(self) -> int:
        return self.components[0]

    @property
    def num_edges(self) -> int:
        """Directed edges of the input, self-loops included: what attention computes."""
        return self.directed.nnz

    def normalized_adjacency(self) -> scipy.sparse.csr_matrix:
        r"""``M = I - L`` where ``L`` is the normalised Laplacian (built once, shared).

        .. math::
            M = D^{-1/2} W D^{-1/2} + \operatorname{diag}(d = 0)

        An isolated node has ``L_{vv} = 0`` (Chung's convention, as networkx), so the
        multiplicity of the eigenvalue 0 of ``L`` is the number of components.
        """
        return self._normalized_adjacency

    @functools.cached_property
    def _normalized_adjacency(self) -> scipy.sparse.csr_matrix:
        d = self.degrees
        scale = np.divide(1.0, np.sqrt(d), out=np.zeros_like(d), where=d > 0)
        s = scipy.sparse.diags(scale) @ self.adjacency @ scipy.sparse.diags(scale)
        return (s + scipy.sparse.diags((d == 0).astype(np.float64))).tocsr()

    def laplacian(self) -> scipy.sparse.csr_matrix:
        r"""``L = I - D^{-1/2} W D^{-1/2}`` (``[n, n]`` CSR), with ``L_{vv} = 0`` for an isolated
        ``v``.

        A new matrix on every call: the solvers keep only the views they reuse
        (:attr:`permuted_laplacian`, :attr:`laplacian_spectrum`).
        """
        return (scipy.sparse.identity(self.n, format="csr") - self.normalized_adjacency()).tocsr()

    @functools.cached_property
    def rcm_order(self) -> tuple[np.ndarray, int]:
        """``(perm, half)``: a reverse Cuthill-McKee ordering of ``W`` and the half bandwidth of
        ``W`` in that order (``O(edges)``). Small ``half`` means a banded graph (windows, blocks).
        """
        w = self.adjacency
        perm = reverse_cuthill_mckee(w, symmetric_mode=True)
        position = np.empty_like(perm)
        position[perm] = np.arange(self.n, dtype=perm.dtype)
        rows = np.repeat(np.arange(self.n), np.diff(w.indptr))
        return perm, int(np.abs(position[rows] - position[w.indices]).max(initial=0))

    @functools.cached_property
    def permuted_laplacian(self) -> scipy.sparse.csr_matrix:
        """``L[perm][:, perm]`` in the order of :attr:`rcm_order`: what the banded solvers
        factor."""
        perm, _ = self.rcm_order
        return self.laplacian()[perm][:, perm]

    @functools.cached_property
    def permuted_adjacency(self) -> scipy.sparse.csr_matrix:
        """``W[perm][:, perm]`` in the order of :attr:`rcm_order` (banded adjacency solvers)."""
        perm, _ = self.rcm_order
        return self.adjacency[perm][:, perm]

    @functools.cached_property
    def laplacian_spectrum(self) -> np.ndarray:
        """All ``n`` eigenvalues of ``L``, ascending, the kernel set to exactly 0 (read-only).

        Raises:
            ValueError: above ``DENSE_MAX_NODES`` nodes, where the dense ``n x n`` matrix is too
                large (the sparse solvers of :mod:`analysis.spectral` take over there).
        """
        spectrum = self.laplacian_eigenvalues()
        spectrum.flags.writeable = False  # shared between callers
        return spectrum

    def laplacian_eigenvalues(self, max_nodes: int = DENSE_MAX_NODES) -> np.ndarray:
        """:attr:`laplacian_spectrum`, computed anew and refused only above ``max_nodes``: for
        callers that accept a larger dense solve once (a ``k`` too large for sparse solvers)."""
        spectrum = np.linalg.eigvalsh(
            self._dense("laplacian_spectrum", self.laplacian(), max_nodes)
        )
        spectrum[: self.num_components] = 0.0
        return spectrum

    @functools.cached_property
    def adjacency_spectrum(self) -> np.ndarray:
        """All ``n`` eigenvalues of ``W``, ascending (read-only).

        Raises:
            ValueError: above ``DENSE_MAX_NODES`` nodes, as :attr:`laplacian_spectrum`.
        """
        spectrum = np.linalg.eigvalsh(self._dense("adjacency_spectrum", self.adjacency))
        spectrum.flags.writeable = False  # shared between callers
        return spectrum

    def _dense(
        self, name: str, matrix: scipy.sparse.spmatrix, max_nodes: int = DENSE_MAX_NODES
    ) -> np.ndarray:
        if self.n > max_nodes:
            raise ValueError(
                f"{name} is dense: for n <= {max_nodes} nodes, got n={self.n} "
                "(use laplacian_extremes or adjacency_lambda)"
            )
        return matrix.toarray()

    def null_space(self) -> scipy.sparse.csc_matrix:
        r"""``U [n, c]``: orthonormal basis of the kernel of ``L``, one column per component.

        Column ``c`` is :math:`D^{1/2} \mathbf{1}_c` normalised (a unit vector on an isolated node).
        The columns have disjoint supports, so ``U`` is sparse and exactly orthonormal.
        """
        count, labels = self.components
        weight = np.where(self.degrees > 0, np.sqrt(self.degrees), 1.0)
        norms = np.sqrt(np.bincount(labels, weights=weight**2, minlength=count))
        values = weight / norms[labels]
        return scipy.sparse.csc_matrix((values, (np.arange(self.n), labels)), shape=(self.n, count))

    def __repr__(self) -> str:
        return f"Graph(n={self.n}, edges={self.num_edges})"


def as_graph(graph: Any, n: Optional[int] = None) -> Graph:
    """Validate ``graph`` (see the module docstring) and return it as a :class:`Graph`.

    Raises:
        ValueError: on an empty graph (``n = 0``), a non-square matrix, a malformed edge_index,
            negative indices, or indices ``>= n``; the message names the argument.
        TypeError: on an unsupported input type or a non-integer ``n``.
    """
    if isinstance(graph, Graph):
        if n is not None and _check_n(n) != graph.n:
            raise ValueError(f"n={n} disagrees with the graph's {graph.n} nodes")
        return graph
    if hasattr(graph, "to_scipy"):
        if n is None:
            raise ValueError("n (the sequence length) is required to build a pattern")
        # copy: a duck-typed pattern may return (and keep) a cached matrix of its own.
        return Graph(_binary(graph.to_scipy(_check_n(n)).tocsr(), copy=True))
    if scipy.sparse.issparse(graph):
        rows, cols = graph.shape
        if rows != cols:
            raise ValueError(f"adjacency matrix must be square, got shape {rows} x {cols}")
        if n is not None and _check_n(n) != rows:
            raise ValueError(f"n={n} disagrees with the {rows} x {rows} adjacency matrix")
        _check_n(rows)
        return Graph(_binary(scipy.sparse.csr_matrix(graph), copy=True))
    return _from_edge_index(graph, n)


def _from_edge_index(edge_index: Any, n: Optional[int]) -> Graph:
    src, dst = edge_array(edge_index, n)
    data = np.ones(src.shape[0], dtype=np.float64)
    n = int(n)  # validated by edge_array
    return Graph(_binary(scipy.sparse.csr_matrix((data, (dst, src)), shape=(n, n)), copy=False))


def edge_array(edge_index: Any, n: Optional[int]) -> np.ndarray:
    """Validate an edge_index ``[2, E]`` against ``n`` nodes; return it as int64 numpy.

    Raises:
        ValueError: on a wrong shape, a missing or invalid ``n``, or an index outside
            ``[0, n)``.
        TypeError: when ``edge_index`` is not array-like or its entries are not integers.
    """
    if hasattr(edge_index, "detach"):  # torch tensor (or EdgeIndex)
        edge_index = edge_index.detach().cpu().numpy()
    unsupported = TypeError(
        "graph must be a pattern, an edge_index [2, E] or a scipy sparse matrix, "
        f"got {type(edge_index).__name__}"
    )
    try:
        array = np.asarray(edge_index)
    except (TypeError, ValueError):
        raise unsupported from None
    if array.dtype == object:
        raise unsupported
    if array.size == 0:  # an empty list has no integer dtype
        array = array.astype(np.int64)
    if n is None:
        raise ValueError("n (the number of nodes) is required with an edge_index")
    check_edge_index(array, _check_n(n))  # graphdiff's one edge_index rule
    return array.astype(np.int64, copy=False)


def _binary(matrix: scipy.sparse.csr_matrix, copy: bool) -> scipy.sparse.csr_matrix:
    """Sum duplicates, drop explicit zeros, set every stored weight to 1 (float64).

    ``copy=False`` edits ``matrix`` in place: only for matrices built here (a 131k-token pattern
    is half a gigabyte), never for the caller's.
    """
    matrix = matrix.astype(np.float64, copy=copy)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    matrix.data[:] = 1.0
    return matrix


def _check_n(n: Any) -> int:
    return check_int("n", n, 1, why="the graph is empty")
