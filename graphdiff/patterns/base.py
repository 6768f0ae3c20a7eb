"""The :class:`Pattern` base class: a hashable description of "who may attend whom".

A pattern is a value (equal patterns compare and hash equal); calling it with a sequence length
``n`` builds the canonical ``edge_index`` (docs/design.md, "Conventions"):

* ``edge_index[0]`` is the source ``j`` (the key), ``edge_index[1]`` the target ``i`` (the query);
* int64, shape ``[2, E]``, sorted by ``(target, source)``, no duplicates;
* self-loops included unless ``self_loops=False`` is asked for.

Subclasses only implement :meth:`Pattern._edges`, which may return edges in any order and with
duplicates; canonicalisation, caching and every conversion live here, once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Tuple

import numpy as np
import torch
from torch import Tensor

from graphdiff import cache
from graphdiff.checks import check_int

if TYPE_CHECKING:  # pragma: no cover - typing only
    import networkx
    import scipy.sparse
    from torch_geometric import EdgeIndex
    from torch_geometric.data import Data

Edges = Tuple[Tensor, Tensor]  # (source, target), int64, any order, duplicates allowed

# Beyond this a dense n x n view is refused: 8192^2 booleans are already 64 MiB.
MAX_DENSE_NODES = 8192


def canonicalize(src: Tensor, dst: Tensor, n: int, self_loops: bool = True) -> Tensor:
    """Sort edges by ``(target, source)``, drop duplicates and add (or remove) self-loops.

    One linear key ``target * n + source`` turns the lexicographic sort into an integer sort;
    numpy's stable sort is a radix sort for int64 keys, about 4x faster than a comparison sort
    at millions of edges.
    """
    nodes = torch.arange(n, dtype=torch.long)
    if self_loops:
        src, dst = torch.cat([src, nodes]), torch.cat([dst, nodes])
    key = np.sort((dst * n + src).numpy(), kind="stable")
    keep = np.empty(key.shape, dtype=bool)
    keep[:1] = True
    np.not_equal(key[1:], key[:-1], out=keep[1:])
    if not self_loops:
        keep &= key // n != key % n
    key = torch.from_numpy(key[keep])
    return torch.stack([key % n, key // n])


class Pattern:
    """A sparse attention pattern. Subclasses implement :meth:`_edges` and :meth:`_key`.

    ``pattern(n)`` returns the canonical edge_index for length ``n``, cached per length in
    :mod:`graphdiff.cache` and shared between equal patterns: an edit in place reaches everyone
    who already holds it, but not later calls, which get a fresh one.
    """

    # -- subclass interface -------------------------------------------------------------------
    def _edges(self, n: int) -> Edges:
        raise NotImplementedError

    def _key(self) -> tuple:
        """The constructor arguments that define the pattern (for ``==`` and ``hash``)."""
        raise NotImplementedError

    # -- value semantics ----------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    # -- building -----------------------------------------------------------------------------
    def __call__(self, n: int, self_loops: bool = True) -> Tensor:
        """Canonical edge_index ``[2, E]`` (int64) of this pattern on ``n`` tokens (cached)."""
        n = check_int("n", n, low=1)
        self_loops = bool(self_loops)

        def build() -> Tensor:
            src, dst = self._edges(n)
            return canonicalize(src.long(), dst.long(), n, self_loops)

        return cache.CACHE.get(("pattern", self, n, self_loops), build)

    def num_edges(self, n: int, self_loops: bool = True) -> int:
        return self(n, self_loops).size(1)

    # -- algebra ------------------------------------------------------------------------------
    def __or__(self, other: "Pattern") -> "Pattern":
        from graphdiff.patterns.ops import PatternUnion

        return PatternUnion(self, other)

    def __and__(self, other: "Pattern") -> "Pattern":
        from graphdiff.patterns.ops import Intersection

        return Intersection(self, other)

    def causal(self) -> "Pattern":
        """Keep only edges ``j -> i`` with ``j <= i`` (no attention to the future)."""
        from graphdiff.patterns.ops import Causal

        return Causal(self)

    def symmetric(self) -> "Pattern":
        """Add the reverse ``i -> j`` of every edge ``j -> i``."""
        from graphdiff.patterns.ops import Symmetric

        return Symmetric(self)

    # -- conversions --------------------------------------------------------------------------
    def to_edge_index(self, n: int, self_loops: bool = True) -> "EdgeIndex":
        """PyG :class:`~torch_geometric.EdgeIndex`, sorted by target (column), size ``(n, n)``."""
        from torch_geometric import EdgeIndex

        return EdgeIndex(self(n, self_loops), sparse_size=(n, n), sort_order="col")

    def to_data(self, n: int, self_loops: bool = True) -> "Data":
        """A PyG ``Data`` with the pattern's canonical ``edge_index [2, E]`` and ``num_nodes=n``,
        no features (:func:`graphdiff.data.sequence_graph` adds tokens and positions)."""
        from torch_geometric.data import Data

        return Data(edge_index=self(n, self_loops), num_nodes=n)

    def to_scipy(self, n: int, self_loops: bool = True) -> "scipy.sparse.csr_matrix":
        """``[n, n]`` CSR matrix with ``M[i, j] = 1`` for every edge ``j -> i`` (rows = queries)."""
        import numpy as np
        import scipy.sparse

        src, dst = self(n, self_loops).numpy()
        data = np.ones(src.shape[0], dtype=np.float64)
        return scipy.sparse.csr_matrix((data, (dst, src)), shape=(n, n))

    def to_networkx(self, n: int, self_loops: bool = True) -> "networkx.DiGraph":
        """Directed graph on nodes ``0..n-1`` with an edge ``(j, i)`` for "i attends j"."""
        import networkx as nx

        graph = nx.DiGraph()
        graph.add_nodes_from(range(n))
        graph.add_edges_from(self(n, self_loops).t().tolist())
        return graph

    def to_sparse_tensor(self, n: int, self_loops: bool = True) -> Any:
        """``torch_sparse.SparseTensor`` in PyG's ``adj_t`` layout (rows = targets)."""
        try:
            from torch_sparse import SparseTensor
        except ImportError as error:  # optional dependency
            raise ImportError(
                "to_sparse_tensor needs torch-sparse: pip install --no-build-isolation torch-sparse"
            ) from error
        src, dst = self(n, self_loops)
        return SparseTensor(row=dst, col=src, sparse_sizes=(n, n), is_sorted=True)

    def to_dense(self, n: int, self_loops: bool = True) -> Tensor:
        """Boolean ``[n, n]`` mask, ``mask[i, j]`` = "query i attends key j" (SDPA's convention).

        Only for small ``n`` (at most ``MAX_DENSE_NODES``): the point of a pattern is to avoid it.
        """
        n = check_int("n", n, low=1)
        if n > MAX_DENSE_NODES:
            raise ValueError(
                f"to_dense refuses n={n} > {MAX_DENSE_NODES}: an n x n mask is what sparse "
                "patterns exist to avoid; use to_scipy or to_sparse_tensor instead"
            )
        src, dst = self(n, self_loops)
        mask = torch.zeros(n, n, dtype=torch.bool)
        mask[dst, src] = True
        return mask
