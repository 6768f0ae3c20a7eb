"""The CSR structure of an attention pattern, built once per graph and reused.

Every fused kernel in :mod:`graphdiff.nn` runs on a :class:`DiffusionGraph`: the target-major
CSR of the pattern (rows = queries i, columns = keys j) and its transpose (rows = keys), with
int32 indices when they fit. Every head shares the one structure; per-edge values are laid out
head-major (``[H, E]``) and :meth:`DiffusionGraph.csr` wraps one head's row as a
``torch.sparse`` CSR matrix without copying. On short sequences several heads share one
sparse call through the block-diagonal :meth:`DiffusionGraph.stacked` structure.

Building the structure (sorting, CSR conversion, range checks) costs more than a whole
diffusion: build it once with :func:`diffusion_graph` and pass the :class:`DiffusionGraph` to
every layer (as :class:`~graphdiff.models.Diffuser` does for each batch). An adjacency seen a
second time is found in :mod:`graphdiff.cache`, under its byte budget.
"""

from __future__ import annotations

import functools
import warnings
import weakref
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.utils._pytree as pytree
from torch import Tensor
from torch_geometric.typing import SparseTensor

from graphdiff import cache
from graphdiff.checks import check_edge_index

_INT32_MAX = 2**31 - 1

# Heads are stacked into one block-diagonal product while the stack holds at most this many
# edges. Each sparse call costs about 10-15 us of Python and dispatch besides its work; on the
# benchmark pattern, stacking saves about a third of a forward + backward at 256 tokens and
# 10-25% at 1k-2k, and nothing measurable at 4k tokens (460k edges per head), where a head's
# work dwarfs the call (docs/performance.md, "Short sequences: stacked heads"). A stack costs
# about 20 bytes per edge (int32 indices both ways, int64 transposed positions): at most
# 20 MiB for each number of heads per call that the model's layers use.
MAX_STACKED_EDGES = 1 << 20
# ... and at most this many nodes on either side, so that a stack's [N, C] scratch stays as
# small as a head's of a long sequence (8 MiB at C = 32, below glibc's mmap threshold, see
# docs/performance.md, "Memory allocator"): graphs with many nodes and few edges per node run
# head by head.
MAX_STACKED_NODES = 1 << 16

# Why building structure (sorting, conversion, caching) stays out of a compiled region.
BUILT_OUTSIDE = (
    "graphdiff builds a graph's structure eagerly: pass torch.compile (fullgraph=True) and "
    "torch.export a prebuilt DiffusionGraph, prepared for the layers' heads with "
    "graph.prepare(heads) (a model's: Diffuser.prepare, with gradients enabled for training)"
)


def _structure_building(fn: Callable) -> Callable:
    """Runs ``fn`` (it builds structure) outside ``torch.compile``'s graph, and refuses it
    while ``torch.export`` traces, which would record the sort and fix every size."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if torch.compiler.is_exporting():
            raise RuntimeError(BUILT_OUTSIDE)
        return fn(*args, **kwargs)

    return torch.compiler.disable(wrapper, reason=BUILT_OUTSIDE)


def sparse_csr(crow: Tensor, col: Tensor, values: Tensor, size: Tuple[int, int]) -> Tensor:
    """A CSR tensor without invariant checks (the structure was validated when built)."""
    return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


def _silence_csr_beta_warning() -> None:
    # torch warns once per process that CSR support is "beta"; it is what we rely on. Taking
    # that one warning here spares every later call a catch_warnings block (about 2.5 us,
    # a tenth of a short sequence's per-head overhead).
    index = torch.zeros(1, dtype=torch.int32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sparse_csr(index, index[:0], torch.zeros(0), (0, 0))


_silence_csr_beta_warning()


# A band's blocks hold at least this many tokens: smaller ones make dense products too
# small to beat the sparse ones.
MIN_BAND_BLOCK = 16
# Dense parts are looked for in graphs of at least this many edges: the benchmark pattern's
# from about 550 tokens on; below, its band has few blocks (docs/performance.md, "Dense
# parts").
MIN_DENSE_EDGES = MAX_STACKED_EDGES // 16
# A band whose blocks do not divide N runs head by head (its copies in a stack would not line
# up, see DiffusionGraph.stacked): it is kept from this many edges on, below which the CSR of
# stacked heads is faster.
MIN_UNSTACKED_BAND_EDGES = MAX_STACKED_EDGES // 4


def find_band(src: Tensor, dst: Tensor, num_nodes: int) -> Optional[Tuple[int, Tensor, Tensor]]:
    r"""The block band of a square graph whose edges ``src -> dst`` are sorted by target: a
    block size ``w`` such that every target of blocks ``1 .. B`` (``B = N // w - 2``; block
    ``b`` holds tokens ``bw .. bw + w - 1``) has an edge from each of the ``3w`` sources of
    blocks ``b - 1 .. b + 1``, exactly once. The official Diffuser window
    (:class:`~graphdiff.patterns.BlockWindow`) is such a band, and a sliding window of
    ``2h + 1`` tokens holds one with ``w = (h + 1) // 2``.

    A band's edges are dense ``[w, 3w]`` blocks, whose scores and products are batched
    dense matrix products (``bmm``) instead of sparse ones. The candidate sizes are read off
    the run of consecutive sources around a few targets, and the band is used only when every
    one of its ``B w \cdot 3w`` edges is there.

    Returns ``(w, band, other)``: the positions of the band's edges in ``[B, w, 3w]`` order
    (target block, target within it, source within the three blocks) and those of the other
    edges in their order; ``None`` when there is no band with ``w >= MIN_BAND_BLOCK``.
    """
    if num_nodes < 3 * MIN_BAND_BLOCK or src.numel() == 0:
        return None
    for w in _band_sizes(src, dst, num_nodes):
        if w < MIN_BAND_BLOCK or num_nodes // w < 3:
            continue
        blocks = num_nodes // w - 2
        offset = src - (torch.div(dst, w, rounding_mode="floor") - 1) * w
        in_band = (dst >= w) & (dst < (blocks + 1) * w) & (offset >= 0) & (offset < 3 * w)
        band = _dense_block(in_band, (dst - w) * (3 * w) + offset, blocks * 3 * w * w)
        if band is not None:
            return w, band, (~in_band).nonzero().squeeze(1)
    return None


def _dense_block(mask: Tensor, slot: Tensor, size: int) -> Optional[Tensor]:
    """The positions of the edges in ``mask`` ordered by their ``slot`` in a dense block of
    ``size`` entries, or ``None`` unless every slot holds exactly one edge (a missing edge
    leaves one empty; a duplicate takes another's)."""
    positions = mask.nonzero().squeeze(1)
    if positions.numel() != size:
        return None
    order = torch.full((size,), -1, dtype=torch.long, device=mask.device)
    order[slot[positions]] = positions
    return order if bool((order >= 0).all()) else None


def find_global(
    src: Tensor, dst: Tensor, num_nodes: int, band: int
) -> Optional[Tuple[int, Tensor, Tensor, Tensor]]:
    """The global tokens of a square graph's edges outside its band (sorted by target):
    ``G``, the number of leading targets with an edge from every source (at most ``w`` with a
    band, ``N / 2`` without), when every target from :func:`global_start` on has an edge from
    each of sources ``0 .. G - 1`` and all of these edges are there exactly once
    (:class:`~graphdiff.patterns.Global`'s first positions); else none. Those edges
    are a dense ``[G, N]`` and a dense ``[N - start, G]`` block, whose products are plain
    matrix products; the global targets lie before the band's first block (``G <= w``).

    Returns ``(G, rows, columns, other)``: the positions of the ``[G, N]`` block's edges (row
    by row), of the ``[N - start, G]`` block's, and of the other edges in their order;
    ``None`` when there are none.
    """
    limit = min(band or num_nodes // 2, num_nodes)
    pointer = torch.searchsorted(dst, torch.arange(limit + 1).to(dst))
    full = (pointer[1:] - pointer[:-1]).ge(num_nodes)
    num_global = int(full.long().cumprod(0).sum())  # the leading full targets
    if num_global == 0:
        return None
    start = global_start(band, num_global)
    rows, columns = dst < num_global, (dst >= start) & (src < num_global)
    row_block = _dense_block(rows, dst * num_nodes + src, num_global * num_nodes)
    column_block = _dense_block(
        columns, (dst - start) * num_global + src, (num_nodes - start) * num_global
    )
    if row_block is None or column_block is None:
        return None
    return num_global, row_block, column_block, (~(rows | columns)).nonzero().squeeze(1)


def global_start(band: int, num_global: int) -> int:
    """The first target of the global columns' dense block: the band's second block (the
    first block's targets have those sources in the band), else the first after the global
    targets."""
    return 2 * band if band else num_global


def find_dense_parts(src: Tensor, dst: Tensor, num_nodes: int) -> Tuple[int, int, Tensor]:
    """``(w, G, order)``: the band's block size (:func:`find_band`), the number of global
    tokens (:func:`find_global`), each 0 where there is none, and the storage order of a
    square graph's edges (sorted by target): the band's, the global rows', the global
    columns', then the other edges'. A band whose blocks do not divide ``N`` is kept only from
    ``MIN_UNSTACKED_BAND_EDGES`` edges on (its heads cannot share a call)."""
    other = torch.arange(src.numel(), device=src.device)
    if num_nodes < 3 * MIN_BAND_BLOCK or src.numel() < MIN_DENSE_EDGES:
        return 0, 0, other
    dense, band, num_global = [], 0, 0
    found = find_band(src, dst, num_nodes)
    if found is not None and (num_nodes % found[0] == 0 or src.numel() >= MIN_UNSTACKED_BAND_EDGES):
        band, positions, other = found
        dense.append(positions)
    found = find_global(src[other], dst[other], num_nodes, band)
    if found is not None:
        num_global, rows, columns, rest = found
        dense += [other[rows], other[columns]]
        other = other[rest]
    return band, num_global, torch.cat([*dense, other])


def _band_sizes(src: Tensor, dst: Tensor, num_nodes: int, samples: int = 8) -> List[int]:
    """Candidate block sizes: from the most common length ``L`` of the run of consecutive
    sources around a target's own position among a few targets (a random or global source
    next to the run lengthens it at some), a block window's ``L // 3`` and a sliding
    window's ``(L + 1) // 4``."""
    targets = torch.arange(1, samples + 1) * num_nodes // (samples + 1)
    bounds = torch.searchsorted(dst, torch.stack([targets, targets + 1]).to(dst)).tolist()
    runs = []
    for target, start, end in zip(targets.tolist(), *bounds):
        sources = set(src[start:end].tolist())
        if target not in sources:
            return []
        low, high = target, target
        while low - 1 in sources:
            low -= 1
        while high + 1 in sources:
            high += 1
        runs.append(high - low + 1)
    run = max(sorted(runs), key=runs.count)  # the most common, the shortest of a tie
    return list(dict.fromkeys([run // 3, (run + 1) // 4]))


class DiffusionGraph:
    r"""Target-major CSR structure of a (possibly bipartite) graph with ``E`` edges.

    Per-edge values are kept in *storage order*: the CSR order (by target), except on a graph
    with dense parts, found when it is built: a block band (:attr:`band`, :func:`find_band`),
    whose edges come first as ``[B, w, 3w]``, then global tokens' rows and columns
    (:attr:`num_global`, :func:`find_global`), then the CSR of the other edges.
    Edge ``e`` of the *input* order is storage position ``inv(perm)[e]``; ``perm`` is ``None``
    when the storage order is the input order (canonical patterns without a band), so no
    permutation is ever applied on that path.

    Args:
        src (torch.Tensor): Source (key) index of every edge, input order.
        dst (torch.Tensor): Target (query) index of every edge, input order.
        num_nodes (Tuple[int, int]): ``(N_src, N_dst)``.
        sorted_by_target (bool, optional): Skip the sortedness check. (default: :obj:`False`)
        find_dense (bool, optional): Look for a band and global tokens, whose edges then run
            as dense products. (default: :obj:`True`)
    """

    # No dense parts unless found (also for a graph pickled before they existed); a graph is
    # one copy of itself unless it is a stack.
    band = num_global = 0
    copies = 1

    # Built outside inference mode, like every lazily cached part below: a structure first
    # built under torch.inference_mode() would hold inference tensors, which autograd refuses
    # to save when the same graph is later used for training.
    @torch.inference_mode(False)
    def __init__(
        self,
        src: Tensor,
        dst: Tensor,
        num_nodes: Tuple[int, int],
        sorted_by_target: bool = False,
        find_dense: bool = True,
    ) -> None:
        self.num_src, self.num_dst = int(num_nodes[0]), int(num_nodes[1])
        self.num_edges = src.numel()
        self.perm: Optional[Tensor] = None
        if not sorted_by_target and self.num_edges > 1 and bool((dst[1:] < dst[:-1]).any()):
            self.perm = torch.sort(dst, stable=True)[1]
            src, dst = src[self.perm], dst[self.perm]
        if self.is_square and find_dense:
            self.band, self.num_global, order = find_dense_parts(src, dst, self.num_dst)
            if self.band or self.num_global:
                self.perm = order if self.perm is None else self.perm[order]
                other = order[self.dense_edges :]
                src, dst = src[other], dst[other]
        # int32 indices when they fit: half the index memory and traffic of every sparse
        # product (torch would convert int64 ones at every call). Copies, never views: a view
        # would keep the adjacency alive from inside the cache entry that dies with it.
        self.index_dtype = _index_dtype(self.num_edges, self.num_src, self.num_dst)
        self.row = dst.to(self.index_dtype, copy=True)  # target of every CSR position
        self.col = src.to(self.index_dtype, copy=True)  # source of every CSR position
        self.crow = self._row_pointer(self.row, self.num_dst)
        self._transposed: Optional[Tuple[Tensor, Tensor, Tensor]] = None
        self._stacked: Dict[int, DiffusionGraph] = {}
        # A stack's transpose is its source's, repeated: no sort. Weak, so that the source's
        # cache of stacks makes no reference cycle (a stack alone falls back to sorting).
        self._stack_of: Optional[Tuple[weakref.ref, int]] = None

    @classmethod
    def from_structure(cls, structure: Sequence[Any], num_src: int) -> DiffusionGraph:
        """The graph of :meth:`structure` (the transposed three tensors empty when they were
        left out), wrapped without copies or checks: how the fused kernels, which take plain
        tensors and numbers, see the structure they were given."""
        crow, col, row, crow_t, col_t, position_t, band, num_global, copies = structure
        # A real transpose has a row pointer of N_src + 1 >= 1 entries.
        transposed = (crow_t, col_t, position_t) if crow_t.numel() else None
        return cls._assemble(
            crow, col, row, num_src, band, num_global, copies, transposed=transposed
        )

    @classmethod
    def _assemble(
        cls,
        crow: Tensor,
        col: Tensor,
        row: Tensor,
        num_src: int,
        band: int = 0,
        num_global: int = 0,
        copies: int = 1,
        perm: Optional[Tensor] = None,
        transposed: Optional[Tuple[Tensor, Tensor, Tensor]] = None,
        stacked: Optional[Dict[int, DiffusionGraph]] = None,
    ) -> DiffusionGraph:
        """A graph of built parts, sizes read from them (``num_src`` aside)."""
        graph = cls.__new__(cls)
        graph.num_src, graph.num_dst, graph.band = num_src, crow.size(0) - 1, band
        graph.num_global, graph.copies = num_global, copies
        graph.num_edges = graph.dense_edges + col.size(0)
        graph.perm, graph.index_dtype = perm, col.dtype
        graph.row, graph.col, graph.crow = row, col, crow
        graph._transposed, graph._stacked, graph._stack_of = transposed, stacked or {}, None
        return graph

    def structure(self, backward: bool = True) -> Tuple[Any, ...]:
        """The structure as plain tensors and a number, what the fused kernels (custom
        operators) take: ``(crow, col, row, crow_t, col_t, position_t, band, num_global,
        copies)``, the CSR of the edges outside the dense parts by target with the target of
        every position, its :meth:`transposed` CSR, the band's block size, the number of
        global tokens (0: none) and the number of copies of a :meth:`stacked` graph (1 for
        others). Without ``backward`` the transposed three are empty: only gradients read
        them, and building them sorts the edges."""
        if backward:
            transposed = self.transposed()
        else:
            empty = self.col.new_empty(0)
            transposed = (empty, empty, empty.long())
        dense = (self.band, self.num_global, self.copies)
        return (self.crow, self.col, self.row, *transposed, *dense)

    def prepare(self, heads: int, backward: bool = True) -> DiffusionGraph:
        """Builds now what the kernels would build lazily on the first call with ``heads``
        heads: the :meth:`stacked` graph that :meth:`heads_per_call` picks and, with
        ``backward``, its :meth:`transposed` structure. A compiled region
        (``torch.compile(fullgraph=True)``, ``torch.export``) can then read them; building
        them (sorting, caching) cannot be traced. Returns this graph."""
        stack = self.stacked(self.heads_per_call(heads))
        if backward:
            stack.transposed()
        return self

    def __getstate__(self) -> Dict[str, Any]:
        # Stacks are rebuilt on demand; a stack's weak link to its source cannot be pickled.
        return {**self.__dict__, "_stacked": {}, "_stack_of": None}

    def nbytes(self) -> int:
        """Bytes this structure holds now, its lazily built parts and stacks included."""
        parts = [self.perm, self.row, self.col, self.crow]
        parts += self._transposed or ()
        own = sum(t.numel() * t.element_size() for t in parts if t is not None)
        return own + sum(stack.nbytes() for stack in self._stacked.values())

    @property
    def is_square(self) -> bool:
        return self.num_src == self.num_dst

    def __repr__(self) -> str:
        dense = f", band={self.band}" if self.band else ""
        dense += f", num_global={self.num_global}" if self.num_global else ""
        dense += f", copies={self.copies}" if self.copies > 1 else ""
        return (
            f"{self.__class__.__name__}(num_nodes=({self.num_src}, {self.num_dst}), "
            f"num_edges={self.num_edges}{dense})"
        )

    # -- the block band: targets of blocks 1 .. B of w tokens, each with the 3w sources of
    # its own and its two neighbouring blocks, per-edge values [B, w, 3w] at the front.

    @property
    def band_blocks(self) -> int:
        """``B``, the number of target blocks in the band (0 without one)."""
        return self.num_dst // self.band - 2 if self.band else 0

    @property
    def band_edges(self) -> int:
        """The number of band edges, ``B * w * 3w``, the first positions of the storage."""
        return self.band_blocks * 3 * self.band**2

    # The views below are single as_strided calls: a kernel takes a few of them per sparse
    # product, and a chain of narrow/unflatten/unfold costs about 5 us a link.

    def band_values(self, values: Tensor) -> Tensor:
        """One head's band values as ``[B, w, 3w]`` (a view of ``values [E]``)."""
        w = self.band
        return values.as_strided((self.band_blocks, w, 3 * w), (3 * w * w, 3 * w, 1))

    def band_padding(self, values: Tensor) -> Tensor:
        """A stack's band slots that hold no edge, as ``[copies - 1, 2, w, 3w]`` (a view of
        one stack's ``values [E]``): the two blocks on either side of each boundary between
        copies, whose targets are a copy's first or last block and whose sources reach into
        the next copy or the previous one. The kernels keep them 0 (they are not edges of any
        copy); empty for a single copy."""
        w, size = self.band, 3 * self.band**2
        blocks = self.copy_nodes // w  # per copy
        return values.as_strided(
            (self.copies - 1, 2, w, 3 * w),
            (blocks * size, size, 3 * w, 1),
            values.storage_offset() + (blocks - 2) * size,
        )

    @property
    def dense_edges(self) -> int:
        """The number of edges in dense parts (band, global rows and columns), the first
        positions of the storage."""
        start = global_start(self.band, self.num_global)
        return self.band_edges + self.num_global * (2 * self.num_dst - self.copies * start)

    def global_blocks(self, values: Tensor) -> List[Tuple[Tensor, slice, slice]]:
        """One head's (or stack's) global edges as dense blocks ``(values [copies, R, S],
        targets, sources)`` (views; the slices select the block's rows of each copy of target
        and source tensors, :meth:`per_copy`): each copy's global targets' ``[G, n]`` and
        global sources' ``[n - start, G]`` (``n`` nodes per copy). Empty without global
        tokens."""
        if not self.num_global:
            return []
        copies, num_global, n = self.copies, self.num_global, self.copy_nodes
        start = global_start(self.band, num_global)
        offset = values.storage_offset() + self.band_edges
        global_rows = values.as_strided((copies, num_global, n), (num_global * n, n, 1), offset)
        global_columns = values.as_strided(
            (copies, n - start, num_global),
            ((n - start) * num_global, num_global, 1),
            offset + copies * num_global * n,
        )
        return [
            (global_rows, slice(0, num_global), slice(0, n)),
            (global_columns, slice(start, n), slice(0, num_global)),
        ]

    @property
    def copy_nodes(self) -> int:
        """``n``, the nodes of one copy: all of them unless this graph is a stack."""
        return self.num_dst // self.copies

    @property
    def interleaves_copies(self) -> bool:
        """Whether this stack keeps each dense part of all its copies together (see
        :meth:`stacked`) rather than each copy's values one after the other."""
        return self.copies > 1 and bool(self.band or self.num_global)

    def per_copy(self, x: Tensor) -> Tensor:
        """A node tensor ``x [copies * n, ...]`` with contiguous rows as ``[copies, n, ...]``
        (a view), the rows that :meth:`global_blocks`' slices select."""
        return x.view(self.copies, -1, *x.shape[1:])

    def copy_slots(self) -> Tensor:
        """``[copies, E]`` (int64): the storage position in this stack of each copy's edges,
        in the copy's own storage order. Every position but the :meth:`band_padding` is one
        copy's edge."""
        copies, w, num_global, n = self.copies, self.band, self.num_global, self.copy_nodes
        parts = []  # (base, step per copy, length) of each part, in a copy's storage order
        if w:
            blocks = n // w
            parts.append((0, blocks * 3 * w * w, (blocks - 2) * 3 * w * w))
        if num_global:
            rows, columns = num_global * n, (n - global_start(w, num_global)) * num_global
            parts += [
                (self.band_edges, rows, rows),
                (self.band_edges + copies * rows, columns, columns),
            ]
        others = self.col.numel() // copies
        parts.append((self.dense_edges, others, others))
        copy = torch.arange(copies, device=self.col.device).unsqueeze(1)
        arange = functools.partial(torch.arange, device=self.col.device)
        return torch.cat([base + copy * step + arange(size) for base, step, size in parts], dim=1)

    def other_values(self, values: Tensor) -> Tensor:
        """One head's values of the edges outside the dense parts, in CSR order (a view)."""
        return values[self.dense_edges :]

    def band_targets(self, x: Tensor) -> Tensor:
        """The band's targets of a node tensor ``x [N, ...]``: ``[B, w, ...]`` (a view)."""
        return self._node_blocks(x, self.band, self.band)

    def band_sources(self, x: Tensor) -> Tensor:
        """The band's sources of ``x [N, ...]``: block ``b``'s ``3w`` sources ``[B, 3w, ...]``,
        overlapping windows of ``x`` (a view)."""
        return self._node_blocks(x, 0, 3 * self.band)

    def _node_blocks(self, x: Tensor, first: int, rows: int) -> Tensor:
        """``x [N, ...]`` as ``[B, rows, ...]``, block ``b`` from row ``first + b w`` on."""
        step = x.stride(0)
        return x.as_strided(
            (self.band_blocks, rows, *x.shape[1:]),
            (self.band * step, step, *x.stride()[1:]),
            x.storage_offset() + first * step,
        )

    def band_source_thirds(self, x: Tensor) -> List[Tensor]:
        """``x [N, ...]`` as three ``[B, w, ...]`` views, the ``s``-th holding each block's
        ``s``-th block of sources: a sum over the band's targets into their sources adds one
        ``[B, w, ...]`` part into each (the three cover ``x`` without overlapping within
        one)."""
        return [self._node_blocks(x, s * self.band, self.band) for s in range(3)]

    def to_input_order(self, values: Tensor) -> Tensor:
        """Reorder per-edge values ``[E, ...]`` from storage order to the input edge order."""
        if self.perm is None:
            return values
        out = torch.empty_like(values)
        out[self.perm] = values
        return out

    def edge_index(self) -> Tensor:
        """The edges as a plain int64 ``[2, E]`` edge_index (source, target) in the input
        edge order: what PyG's ``propagate`` takes, whatever adjacency built the graph."""
        if self.copies > 1:
            raise ValueError("a stack's edges are its copies': ask the graph it stacks")
        src, dst = self.col.long(), self.row.long()
        if self.band:
            w, blocks = self.band, self.band_blocks
            block = torch.arange(blocks, device=src.device).view(blocks, 1, 1)
            offset = torch.arange(3 * w, device=src.device)
            band_src = (block * w + offset).expand(blocks, w, 3 * w)
            band_dst = ((block + 1) * w + offset[:w].view(w, 1)).expand(blocks, w, 3 * w)
            dense_src, dense_dst = [band_src.flatten()], [band_dst.flatten()]
        else:
            dense_src, dense_dst = [], []
        arange = functools.partial(torch.arange, device=src.device)
        for block, targets, sources in self.global_blocks(arange(self.num_edges)):
            _, rows, cols = block.shape  # one copy
            dense_src.append(arange(sources.start, sources.stop).repeat(rows))
            dense_dst.append(arange(targets.start, targets.stop).repeat_interleave(cols))
        src, dst = torch.cat([*dense_src, src]), torch.cat([*dense_dst, dst])
        return self.to_input_order(torch.stack([src, dst], dim=1)).t()

    def to_csr_order(self, values: Tensor) -> Tensor:
        """Reorder per-edge values ``[E, ...]`` from the input edge order to storage order."""
        return values if self.perm is None else values[self.perm]

    def transposed(self) -> Tuple[Tensor, Tensor, Tensor]:
        """``(crow_t, col_t, position_t)``: the source-major CSR; ``position_t[e]`` (int64)
        is the transposed position of CSR position ``e``. Built lazily (only backward needs
        it)."""
        if self._transposed is None:
            self._transposed = self._build_transpose()
        return self._transposed

    @_structure_building
    @torch.inference_mode(False)
    def _build_transpose(self) -> Tuple[Tensor, Tensor, Tensor]:
        source = self._stack_of[0]() if self._stack_of is not None else None
        if source is None:
            return self._sorted_transpose()
        return self._stacked_transpose(source, self._stack_of[1])

    def _sorted_transpose(self) -> Tuple[Tensor, Tensor, Tensor]:
        perm_t = torch.sort(self.col, stable=True)[1]
        crow_t = self._row_pointer(self.col[perm_t], self.num_src)
        position_t = torch.empty_like(perm_t)
        position_t[perm_t] = torch.arange(perm_t.numel(), device=perm_t.device)
        return crow_t, self.row[perm_t], position_t

    def _stacked_transpose(
        self, source: DiffusionGraph, copies: int
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """The transpose of a stack of ``copies`` copies of ``source``: ``source``'s, with
        every copy shifted (a stack's transpose is the stack of the transposes)."""
        crow_t, col_t, position_t = source.transposed()
        edges = source.col.numel()  # the CSR part's
        return (
            _repeat_pointer(crow_t, copies, edges).to(self.index_dtype),
            _repeat_offset(col_t, copies, source.num_dst).to(self.index_dtype),
            _repeat_offset(position_t, copies, edges),
        )

    def csr(self, values: Tensor, transpose: bool = False) -> Tensor:
        """One head's sparse matrix ``A`` (``[N_dst, N_src]``) of the edges outside the dense
        parts, with per-edge ``values [E]`` in storage order, or for ``transpose=True`` ``A^T``
        with values from :meth:`transpose_values`. Shares the indices; never copies."""
        values = self.other_values(values)
        if transpose:
            crow, col, _ = self.transposed()
            return sparse_csr(crow, col, values, (self.num_src, self.num_dst))
        return sparse_csr(self.crow, self.col, values, (self.num_dst, self.num_src))

    def transpose_values(self, values: Tensor, out: Optional[Tensor] = None) -> Tensor:
        """One head's per-edge values ``[E]`` of the edges outside the dense parts, from storage
        order to the order of the transposed CSR, into ``out`` (``[E]``, its band part left
        as it is) when given."""
        out = torch.empty_like(values) if out is None else out
        # A scatter (sequential reads, random writes) runs about 1.6x faster than the
        # equivalent gather: stores do not stall on cache misses.
        self.other_values(out).index_copy_(0, self.transposed()[2], self.other_values(values))
        return out

    def stacked(self, copies: int) -> DiffusionGraph:
        """The block-diagonal union of ``copies`` copies of this graph (copy ``g`` numbers its
        sources ``g * N_src + j`` and targets ``g * N_dst + i``), built once and cached: the
        graph of ``copies`` heads whose ``[copies, N, C]`` features are viewed as
        ``[copies * N, C]``.

        Without dense parts its ``[copies, E]`` values are viewed as ``[copies * E]``. With
        them its storage holds each part of every copy together, so that one dense product
        serves all copies: the band runs over the ``copies * N`` rows as one band (block rows
        that straddle two copies are :meth:`band_padding`, not edges; so it needs ``N`` to be a
        multiple of ``w``), then the global rows ``[copies, G, N]``, the global columns, and
        the block-diagonal CSR of the other edges; :meth:`copy_slots` maps each copy's storage
        order into it."""
        if copies == 1:
            return self
        if self.band and self.num_dst % self.band:
            raise ValueError(
                f"copies of a band of {self.band} tokens over {self.num_dst} tokens would not "
                f"line up: a multiple of {self.band} is needed (heads_per_call is 1)"
            )
        if copies not in self._stacked:
            self._stacked[copies] = self._build_stack(copies)
        return self._stacked[copies]

    @_structure_building
    def _build_stack(self, copies: int) -> DiffusionGraph:
        # The copies' CSR parts one after the other, their dense parts as this graph's.
        others = self.col.numel()
        itype = _index_dtype(copies * self.num_edges, copies * self.num_src, copies * self.num_dst)
        stack = DiffusionGraph._assemble(
            _repeat_pointer(self.crow, copies, others).to(itype),
            _repeat_offset(self.col, copies, self.num_src).to(itype),
            _repeat_offset(self.row, copies, self.num_dst).to(itype),
            copies * self.num_src,
            self.band,
            self.num_global,
            copies,
        )
        # Its transpose is the source's, repeated (of the CSR part).
        stack._stack_of = (weakref.ref(self), copies)
        return stack

    def heads_per_call(self, heads: int) -> int:
        """How many of ``heads`` heads share one sparse call: the largest divisor of
        ``heads`` whose :meth:`stacked` graph holds at most ``MAX_STACKED_EDGES`` edges and
        ``MAX_STACKED_NODES`` nodes on either side (1 on long sequences, where each head runs
        alone on this graph, and where a band's copies would not line up, see
        :meth:`stacked`)."""
        if self.band and self.num_dst % self.band:
            return 1
        nodes = max(self.num_src, self.num_dst)
        padding = 6 * self.band**2  # per boundary between copies (see band_padding)
        fits = [
            size
            for size in range(2, heads + 1)
            if heads % size == 0
            and size * self.num_edges + (size - 1) * padding <= MAX_STACKED_EDGES
            and size * nodes <= MAX_STACKED_NODES
        ]
        return max(fits, default=1)

    def _row_pointer(self, sorted_rows: Tensor, num_rows: int) -> Tensor:
        return torch.ops.aten._convert_indices_from_coo_to_csr(
            sorted_rows, num_rows, out_int32=self.index_dtype == torch.int32
        )


def _index_dtype(*sizes: int) -> torch.dtype:
    """int32 when every index and position of these sizes fits, else int64."""
    return torch.int32 if max(sizes) <= _INT32_MAX else torch.long


def _repeat_pointer(pointer: Tensor, copies: int, entries: int) -> Tensor:
    """The row pointer of ``copies`` copies of a CSR of ``entries`` entries, one after the
    other (int64)."""
    tail = pointer.new_full((1,), copies * entries, dtype=torch.long)
    return torch.cat([_repeat_offset(pointer[:-1], copies, entries), tail])


def _repeat_offset(index: Tensor, copies: int, step: int) -> Tensor:
    """``index`` repeated ``copies`` times, copy ``g`` shifted by ``g * step`` (int64)."""
    shift = torch.arange(copies, device=index.device).unsqueeze(1) * step
    return (index + shift).reshape(-1)


# A DiffusionGraph is a pytree of its built tensors (stacks included), so that torch.export
# takes one as an input. A square graph's N_src is its N_dst, read from a tensor's shape:
# then no size is a constant of the exported program.
_GRAPH_PARTS = ("crow", "col", "row", "perm", "_transposed", "_stacked")


def _flatten_graph(
    graph: DiffusionGraph,
) -> Tuple[List[Any], Tuple[Optional[int], int, int, int]]:
    num_src = None if graph.is_square else graph.num_src
    context = (num_src, graph.band, graph.num_global, graph.copies)
    return [getattr(graph, name) for name in _GRAPH_PARTS], context


def _flatten_graph_with_keys(graph: DiffusionGraph) -> Tuple[List[Tuple[Any, Any]], Any]:
    parts, context = _flatten_graph(graph)
    return [(pytree.GetAttrKey(name), part) for name, part in zip(_GRAPH_PARTS, parts)], context


def _unflatten_graph(
    parts: Iterable[Any], context: Tuple[Optional[int], int, int, int]
) -> DiffusionGraph:
    crow, col, row, perm, transposed, stacked = parts
    num_src, band, num_global, copies = context
    num_src = crow.size(0) - 1 if num_src is None else num_src
    return DiffusionGraph._assemble(
        crow, col, row, num_src, band, num_global, copies, perm, transposed, dict(stacked)
    )


def _dumpable_context(context: Tuple[Optional[int], int, int, int]) -> List[Optional[int]]:
    return list(context)


def _loaded_context(dumped: List[Optional[int]]) -> Tuple[Optional[int], int, int, int]:
    # JSON gives the tuple back as a list, which a treespec would not compare equal to.
    return tuple(dumped)


pytree.register_pytree_node(
    DiffusionGraph,
    _flatten_graph,
    _unflatten_graph,
    serialized_type_name="graphdiff.nn.DiffusionGraph",
    flatten_with_keys_fn=_flatten_graph_with_keys,
    to_dumpable_context=_dumpable_context,
    from_dumpable_context=_loaded_context,
)


# --------------------------------------------------------------------------------------
# Conversion of every supported adjacency type.


def _coo(adj: Any) -> Tuple[Tensor, Tensor, Optional[Tuple[int, int]], bool]:
    """``(src, dst, sizes or None, sorted_by_target)`` of an adjacency, in its value order;
    ``sizes`` is ``(N_src, N_dst)``, either of which may be ``None`` (an ``EdgeIndex`` without
    that size)."""
    if isinstance(adj, SparseTensor):
        row, col, _ = adj.coo()  # adj_t: rows are targets
        n_dst, n_src = adj.sparse_sizes()
        return col, row, (n_src, n_dst), True
    # Batched adjacencies are refused; values with a vector per edge are fine (never read).
    if isinstance(adj, Tensor) and adj.layout != torch.strided and adj.dim() - adj.dense_dim() != 2:
        raise ValueError(
            f"a sparse 'edge_index' must be one [num_targets, num_sources] "
            f"adjacency (got shape {list(adj.shape)})"
        )
    if isinstance(adj, Tensor) and adj.layout == torch.sparse_csr:  # adj_t: rows = targets
        crow, col = adj.crow_indices(), adj.col_indices()
        row = torch.ops.aten._convert_indices_from_csr_to_coo(crow, col)[0]
        return col, row, (adj.size(1), adj.size(0)), True
    if isinstance(adj, Tensor) and adj.layout == torch.sparse_csc:
        ccol, row = adj.ccol_indices(), adj.row_indices()
        col = torch.ops.aten._convert_indices_from_csr_to_coo(ccol, row)[0]
        return col, row, (adj.size(1), adj.size(0)), False
    if isinstance(adj, Tensor) and adj.layout == torch.sparse_coo:
        # In the mode it was made in: torch cannot coalesce an inference tensor outside it.
        with torch.inference_mode(adj.is_inference()):
            adj = adj.coalesce()
        row, col = adj.indices()
        return col, row, (adj.size(1), adj.size(0)), True
    check_edge_index(adj)
    if hasattr(adj, "as_tensor"):  # torch_geometric.EdgeIndex: operate on the plain data
        plain = adj.as_tensor()
        return plain[0], plain[1], adj.sparse_size(), False  # rows = sources
    return adj[0], adj[1], None, False


def build_diffusion_graph(adj: Any, num_nodes: Tuple[int, int]) -> DiffusionGraph:
    """:func:`diffusion_graph` without the cache: always a new structure."""
    src, dst, sizes, sorted_by_target = _coo(adj)
    n_src, n_dst = int(num_nodes[0]), int(num_nodes[1])
    if sizes is not None and any(size not in (None, n) for size, n in zip(sizes, (n_src, n_dst))):
        raise ValueError(
            f"adjacency of size [{sizes[1]}, {sizes[0]}] (targets x sources) "
            f"does not match the features ({n_dst} targets, {n_src} sources)"
        )
    check_edge_index((src, dst), (n_src, n_dst))
    return DiffusionGraph(src, dst, (n_src, n_dst), sorted_by_target)


def diffusion_graph(adj: Any, num_nodes: Tuple[int, int]) -> DiffusionGraph:
    r"""The :class:`DiffusionGraph` of an adjacency, validated (one structure for every layer
    and hop of a forward pass; build it once and pass it on).

    Args:
        adj: A ``[2, E]`` edge_index Tensor, a PyG ``EdgeIndex``, a ``torch.sparse``
            CSR/CSC/COO adjacency ``adj_t`` (rows = targets), a ``torch_sparse.SparseTensor``
            ``adj_t``, or a :class:`DiffusionGraph` (returned as is).
        num_nodes (Tuple[int, int]): ``(N_src, N_dst)``, the number of rows of the key/value
            and of the query features.

    The structure of an adjacency asked for a second time while it is alive is kept in
    :mod:`graphdiff.cache` (counted against its byte budget) and dies with the adjacency. The
    entry is keyed on the adjacency object and, for a Tensor, its in-place version counter,
    so changing an edge_index in place through torch never returns a stale structure. A
    tensor created under ``torch.inference_mode()`` has no version counter and is not cached.
    Writes that bypass the version counter are not seen: through ``.data``, through a NumPy
    array that shares the memory, or into the index tensors of a sparse adjacency (which, as
    in PyG, count as immutable). After such a write, pass a new tensor.
    """
    if isinstance(adj, DiffusionGraph):
        if adj.num_src != num_nodes[0] or adj.num_dst != num_nodes[1]:
            raise ValueError(
                f"graph has num_nodes {(adj.num_src, adj.num_dst)} but the "
                f"features need {tuple(num_nodes)}"
            )
        return adj
    return _cached_diffusion_graph(adj, num_nodes)


# Under torch.compile the cache's Python (weak references, a dict) would break the graph, or
# guard on state that changes at every call. A prebuilt DiffusionGraph never gets here.
@_structure_building
def _cached_diffusion_graph(adj: Any, num_nodes: Tuple[int, int]) -> DiffusionGraph:
    num_nodes = (int(num_nodes[0]), int(num_nodes[1]))
    if isinstance(adj, Tensor) and adj.is_inference():
        return build_diffusion_graph(adj, num_nodes)
    version = adj._version if isinstance(adj, Tensor) else 0
    return cache.CACHE.get(
        ("structure", id(adj), version, num_nodes),
        lambda: build_diffusion_graph(adj, num_nodes),
        owner=adj,
        admit_on_repeat=True,
    )
