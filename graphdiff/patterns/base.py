"""The :class:`Pattern` base class: a hashable description of "who may attend whom".

A pattern is a value (equal patterns compare and hash equal); calling it with a sequence length
``n`` builds the canonical ``edge_index`` of DESIGN section 3:

* ``edge_index[0]`` is the source ``j`` (the key), ``edge_index[1]`` the target ``i`` (the query);
* int64, shape ``[2, E]``, sorted by ``(target, source)``, no duplicates;
* self-loops included unless ``self_loops=False`` is asked for.

Subclasses only implement :meth:`Pattern._edges`, which may return edges in any order and with
duplicates; canonicalisation, caching and every conversion live here, once.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Hashable, Tuple

import numpy as np
import torch
from torch import Tensor

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


class TensorCache:
    """Least-recently-used cache of built tensors (or tuples of tensors), bounded by their total
    size in bytes.

    A count bound would be wrong both ways: ListOps-style batches need hundreds of short
    lengths, while a handful of million-token patterns already take gigabytes.

    The cached tensors are handed out, not copied (the layer's structure cache recognises a
    graph by its edge_index tensor), so everyone who got one shares it. An edit in place
    reaches those holders, but not later calls: torch's version counter shows the entry
    changed, and the next ``get`` builds a fresh one. Writes that bypass the counter (through
    ``.data`` or a NumPy view) are not seen.
    """

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = max_bytes
        # key -> (value, its tensors' versions when built, its size in bytes when built)
        self.entries: "OrderedDict[Hashable, Tuple[Any, Tuple[int, ...], int]]" = OrderedDict()
        self.bytes = 0

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """The cached value of ``key``, or ``build()`` (kept when it fits)."""
        if key in self.entries:
            value, versions, size = self.entries[key]
            if _versions(value) == versions:
                self.entries.move_to_end(key)
                return value
            del self.entries[key]  # edited in place by someone who got it
            self.bytes -= size
        with torch.inference_mode(False):  # inference tensors have no version counter
            value = build()
        size = _nbytes(value)
        if size > self.max_bytes:  # returned but not kept, and evicting nothing for it
            return value
        while self.entries and self.bytes + size > self.max_bytes:
            _, (_, _, evicted_size) = self.entries.popitem(last=False)
            self.bytes -= evicted_size
        self.entries[key] = (value, _versions(value), size)
        self.bytes += size
        return value

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0


def _tensors(value: Any) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def _nbytes(value: Any) -> int:
    return sum(t.numel() * t.element_size() for t in _tensors(value))


def _versions(value: Any) -> Tuple[int, ...]:
    return tuple(t._version for t in _tensors(value))


# Canonical edge_index per (pattern, n, self_loops), and graphdiff.data's batched
# block-diagonal edges per ("batched", pattern, lengths): one budget for both.
EDGE_INDEX_CACHE = TensorCache()


class Pattern:
    """A sparse attention pattern. Subclasses implement :meth:`_edges` and :meth:`_key`.

    ``pattern(n)`` returns the canonical edge_index for length ``n``, cached per length and
    shared between equal patterns (the layer's structure cache relies on getting the same
    tensor back): an edit in place reaches everyone who already holds it, but not later
    calls, which get a fresh one (see :class:`TensorCache`).
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

        return EDGE_INDEX_CACHE.get((self, n, self_loops), build)

    def num_edges(self, n: int, self_loops: bool = True) -> int:
        return self(n, self_loops).size(1)

    # -- algebra ------------------------------------------------------------------------------
    def __or__(self, other: "Pattern") -> "Pattern":
        from graphdiff.patterns.ops import Union

        return Union(self, other)

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
