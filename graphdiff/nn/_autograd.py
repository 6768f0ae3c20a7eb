"""The fused kernels as custom operators, ``torch.ops.graphdiff``, on the tensors of a
:class:`~graphdiff.nn.graph.DiffusionGraph`.

Per-edge tensors are head-major ``[H, E]`` in the graph's storage order (its dense parts, a
block band and global tokens, first, then the CSR of the other edges; for a stack of heads,
each part of all of them together), node tensors ``[H, N, C]``:
contiguous, or head-major views of node-major ``[N, H, C]`` tensors (PyG's layout), which the
kernels take and return in their layout, without whole-tensor conversion copies (each head of
a node-major tensor passes through ``[N, C]`` scratch instead). Every head shares the graph's
one CSR structure, and each kernel runs its whole computation one head at a time, with the
head's temporaries in a few ``[E]`` and ``[N, C]`` scratch buffers reused across heads (on
short sequences the caller stacks several heads into one "head" of a block-diagonal graph,
:meth:`~graphdiff.nn.graph.DiffusionGraph.stacked`, so that fewer calls share the overhead):

- a sparse product reads its dense operand in the pattern's (partly random) column order,
  and with one head's ``[N, C]`` operand in flight more of those reads hit the cache;
- scratch the size of one head instead of all heads stays below glibc's mmap threshold
  (32 MB: one head's ``[E]`` up to about 8M edges, ``[2, N, C]`` of fp32 up to 128k tokens
  at C = 32), so the allocator hands the same memory back on every step instead of fresh
  pages that fault in on first touch (docs/performance.md, "Memory allocator").

Each kernel saves only ``[H, E]`` or node tensors for backward and computes its gradients with
the same primitives as its forward, each of which runs the band as batched dense products
(``bmm`` on ``[B, w, 3w]`` blocks and overlapping windows of the operand), the global rows and
columns as ``bmm`` over the copies of a stack (one for a single head), and the other edges as:

- SDDMM (``torch.sparse.sampled_addmm``): ``out[e] = <a[i_e], b[j_e]>``, the per-edge dot
  product, never materialising the ``[E, H, C]`` products a gather would (except on graphs
  with more duplicate edges than their matrix has entries, which torch's SDDMM cannot hold:
  there a gather in chunks of ``DUPLICATES_CHUNK`` edges);
- SpMM (CSR ``@`` dense): ``out[i] = sum_e w[e] b[j_e]``, one hop;
- for GAT's scores, which are sums of per-node scalars, gathers of ``[N]`` into ``[E]`` and
  their adjoints, segment sums over each target's edges (CSR order) and each source's (the
  transposed order).

Each kernel is a ``torch.library.custom_op`` on plain tensors: the graph's
:meth:`~graphdiff.nn.graph.DiffusionGraph.structure` (``crow, col, row`` and the transposed
``crow_t, col_t, position_t``, empty where no gradient is wanted, then the band's block size,
the number of global tokens and of a stack's copies), the features and plain numbers. Its fake
kernel gives the outputs' shapes and strides from the inputs' (``E`` is ``col``'s length plus
the dense parts' size, which follows from ``N`` and the three numbers, never read from
values), so that
``torch.compile`` and ``torch.export`` see one opaque op of dynamic size; its gradient is
registered with ``register_autograd`` and computed by a backward operator, which they trace in
turn. The fake kernels allocate through
the same functions as the real ones (:func:`optional_empty`, :func:`diffusion_outputs`,
``empty_nodes``), so that the two agree on layouts.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, List, Optional, Tuple

import torch
from torch import Tensor

from graphdiff.nn._core import empty_nodes, heads_view, is_node_major
from graphdiff.nn.graph import DiffusionGraph

# Edges per gathered chunk where torch's SDDMM cannot serve (see sddmm_).
DUPLICATES_CHUNK = 1 << 14


def sddmm_(
    graph: DiffusionGraph, values: Tensor, a: Tensor, b: Tensor, scale: float = 1.0
) -> Tensor:
    """``values[e] = scale * <a[i_e], b[j_e]>`` for one head, in place: values ``[E]`` (its
    contents are not read), a ``[N_dst, C]``, b ``[N_src, C]`` (contiguous rows)."""
    # beta=0: the dense products write their blocks without reading them (no zero fill of
    # a fresh [E] first, whose pages would fault in twice); torch's SDDMM reads its input.
    if graph.band:  # each block's [w, C] targets times its [3w, C] sources
        graph.band_values(values).baddbmm_(
            graph.band_targets(a), graph.band_sources(b).transpose(1, 2), beta=0, alpha=scale
        )
        clear_padding_(graph, values)
    if graph.num_global:
        a_copies, b_copies = graph.per_copy(a), graph.per_copy(b)
        for block, targets, sources in graph.global_blocks(values):
            block.baddbmm_(
                a_copies[:, targets],
                b_copies[:, sources].transpose(1, 2),
                beta=0,
                alpha=scale,
            )
    other = graph.other_values(values).zero_()
    if other.numel() > graph.num_dst * graph.num_src:
        # Only duplicate edges get here: torch's sampled_addmm cuts the values of a CSR with
        # more entries than its matrix has down to that size (in place, with out=). Gathered
        # in chunks instead, so the [chunk, C] products stay small.
        for start in range(0, other.numel(), DUPLICATES_CHUNK):
            end = start + DUPLICATES_CHUNK
            products = a.index_select(0, graph.row[start:end]) * b.index_select(
                0, graph.col[start:end]
            )
            other[start:end].add_(products.sum(-1), alpha=scale)
        return values
    pattern = graph.csr(values)
    # out=pattern accumulates into `values` in place: without it torch copies the structure
    # and values first (3x the kernel's own time).
    torch.sparse.sampled_addmm(pattern, a, b.t(), alpha=scale, out=pattern)
    return values


def clear_padding_(graph: DiffusionGraph, values: Tensor, fill: float = 0.0) -> None:
    """Sets a stack's :meth:`~graphdiff.nn.graph.DiffusionGraph.band_padding` in one stack's
    ``values [E]`` to ``fill``: 0, what every kernel that writes the band leaves there (they
    are no edges), or ``-inf`` for a softmax to pass over them."""
    if graph.band and graph.copies > 1:
        graph.band_padding(values).fill_(fill)


def dense_rows(x: Tensor, scratch: Optional[Tensor]) -> Tensor:
    """One head's ``[N, C]`` operand with contiguous rows: ``x`` itself, or its copy in
    ``scratch`` when ``x`` is a head of a node-major ``[N, H, C]`` tensor (PyG's layout). The
    sparse products read the operand's rows in random order, and rows spread over H times
    the memory would miss the cache and TLB H times as often."""
    return x if x.is_contiguous() else scratch.copy_(x)


def rows_scratch(x: Tensor) -> Optional[Tensor]:
    """The ``[N, C]`` scratch that :func:`dense_rows` and :func:`spmm_into` need for the heads
    of ``x [H, N, C]`` (``None`` when they are contiguous already)."""
    return None if x[0].is_contiguous() else x.new_empty(x.shape[1:])


def spmm_(
    graph: DiffusionGraph,
    out: Tensor,
    values: Tensor,
    x: Tensor,
    alpha: float = 1.0,
    bias: Optional[Tensor] = None,
    beta: float = 1.0,
    values_t: Optional[Tensor] = None,
) -> Tensor:
    """``out = alpha * M x (+ beta * bias)`` for one head, ``M = A`` of per-edge ``values``
    (storage order) or, given ``values_t`` (:meth:`DiffusionGraph.transpose_values` of
    ``values``), ``A^T``; ``out`` and ``x`` ``[N, C]`` with contiguous rows."""
    matrix = graph.csr(values) if values_t is None else graph.csr(values_t, transpose=True)
    if bias is None:
        torch.mm(matrix, x, out=out)
        if alpha != 1.0:
            out.mul_(alpha)
    else:
        torch.addmm(bias, matrix, x, beta=beta, alpha=alpha, out=out)
    if graph.band:
        band = graph.band_values(values)
        if values_t is None:  # each block's [w, 3w] values times its [3w, C] sources
            graph.band_targets(out).baddbmm_(band, graph.band_sources(x), alpha=alpha)
        else:  # and transposed, into each of the three source blocks in turn
            targets = graph.band_targets(x)
            thirds = zip(graph.band_source_thirds(out), band.split(graph.band, dim=2))
            for sources, part in thirds:
                sources.baddbmm_(part.transpose(1, 2), targets, alpha=alpha)
    if graph.num_global:
        out_copies, x_copies = graph.per_copy(out), graph.per_copy(x)
        for block, targets, sources in graph.global_blocks(values):
            if values_t is None:
                out_copies[:, targets].baddbmm_(block, x_copies[:, sources], alpha=alpha)
            else:
                out_copies[:, sources].baddbmm_(
                    block.transpose(1, 2), x_copies[:, targets], alpha=alpha
                )
    return out


def spmm_into(
    graph: DiffusionGraph,
    out: Tensor,
    scratch: Optional[Tensor],
    values: Tensor,
    x: Tensor,
    values_t: Optional[Tensor] = None,
) -> Tensor:
    """:func:`spmm_` into ``out``, through contiguous ``scratch`` when ``out`` is a head of
    a node-major tensor: torch would compute into a strided temporary, slower than the
    product plus one copy."""
    if scratch is None:
        return spmm_(graph, out, values, x, values_t=values_t)
    return out.copy_(spmm_(graph, scratch, values, x, values_t=values_t))


def per_edge_(
    graph: DiffusionGraph,
    values: Tensor,
    node_values: Tensor,
    op: str,
    buffer: Tensor,
    scale: Optional[Tensor] = None,
) -> Tensor:
    """In place ``values[e] <op>= node_values[target(e)]`` (times ``scale[e]`` when given)
    for one head's ``[E]`` values; ``buffer`` is ``[E]`` scratch."""
    if graph.band:  # a broadcast of the band's targets
        nodes = graph.band_targets(node_values).unsqueeze(-1)
        if scale is not None:
            nodes = torch.mul(nodes, graph.band_values(scale), out=graph.band_values(buffer))
        getattr(graph.band_values(values), op)(nodes)
    if graph.num_global:
        node_copies = graph.per_copy(node_values)
        scales = graph.global_blocks(scale) if scale is not None else None
        for i, (block, targets, _) in enumerate(graph.global_blocks(values)):
            nodes = node_copies[:, targets].unsqueeze(-1)
            getattr(block, op)(nodes if scales is None else nodes * scales[i][0])
    other = graph.other_values(buffer)
    torch.index_select(node_values, 0, graph.row, out=other)
    if scale is not None:
        other.mul_(graph.other_values(scale))
    getattr(graph.other_values(values), op)(other)
    return values


def row_reduce(graph: DiffusionGraph, values: Tensor, reduce: str = "sum") -> Tensor:
    """``reduce`` ("sum" or "max") of one head's ``[E]`` values over each target's edges ->
    ``[N_dst]``; targets without edges get 0 (sum) or -inf (max)."""
    out = torch.segment_reduce(graph.other_values(values), reduce, offsets=graph.crow)
    if graph.band:
        targets, band = graph.band_targets(out), graph.band_values(values)
        if reduce == "sum":
            targets.add_(band.sum(-1))
        else:
            torch.maximum(targets, band.amax(-1), out=targets)
    if graph.num_global:
        out_copies = graph.per_copy(out)
        for block, targets, _ in graph.global_blocks(values):
            if reduce == "sum":
                out_copies[:, targets] += block.sum(-1)
            else:
                out_copies[:, targets] = torch.maximum(out_copies[:, targets], block.amax(-1))
    return out


# Scores within [-EXP_SAFE, EXP_SAFE] need no shift before exp(): exp(64) = 6.2e27 summed
# over 2^31 edges stays finite in float32, and exp(-64) = 1.6e-28 is a normal number.
EXP_SAFE = 64.0


def max_abs(x: Tensor, dim: Optional[int] = None) -> float:
    """The largest ``|x|`` (or, with ``dim``, the largest norm over ``dim``); 0 when empty.
    Off the CPU infinity: reading the value back would stall the device at every call, for a
    shift that costs a GPU little."""
    if x.device.type != "cpu":
        return float("inf")
    if x.numel() == 0:
        return 0.0
    return float(x.abs().max() if dim is None else torch.linalg.vector_norm(x, dim=dim).max())


def segment_softmax_(
    graph: DiffusionGraph, values: Tensor, buffer: Tensor, bound: float = float("inf")
) -> Tensor:
    """In place softmax of one head's ``[E]`` scores over each target's edges; ``buffer`` is
    ``[E]`` scratch. ``bound`` is a bound on the scores' magnitude: the softmax is invariant
    to a shift of each target's scores, which only keeps exp() from overflowing, so within
    :data:`EXP_SAFE` the per-target maximum (a segment max and a broadcast, about half the
    softmax's time) is not taken off."""
    clear_padding_(graph, values, -math.inf)  # no edges: out of the maximum and the sums
    if not bound <= EXP_SAFE:  # also for a NaN bound
        per_edge_(graph, values, row_reduce(graph, values, "max"), "sub_", buffer)
    values.exp_()
    per_edge_(graph, values, row_reduce(graph, values).reciprocal_(), "mul_", buffer)
    clear_padding_(graph, values)  # 0 / 0 on rows without edges
    return values


def segment_softmax_backward_(
    graph: DiffusionGraph, attn: Tensor, grad: Tensor, out: Tensor, buffer: Tensor
) -> Tensor:
    """The gradient of one head's scores from that of its softmax ``attn [E]``, into ``out``:
    the Jacobian ``A * (dA - sum_j A dA)`` (the sum over each target's edges)."""
    torch.mul(attn, grad, out=out)
    return per_edge_(graph, out, row_reduce(graph, out), "sub_", buffer, scale=attn)


def gather_scores_(
    graph: DiffusionGraph, out: Tensor, src: Tensor, dst: Tensor, buffer: Tensor
) -> Tensor:
    """``out[e] = src[source(e)] + dst[target(e)]`` for one head's per-node scores ``src
    [N_src]`` and ``dst [N_dst]``; ``buffer`` is ``[E]`` scratch."""
    if graph.band:
        graph.band_values(out).copy_(graph.band_sources(src).unsqueeze(1))
    if graph.num_global:
        src_copies = graph.per_copy(src)
        for block, _, sources in graph.global_blocks(out):
            block.copy_(src_copies[:, sources].unsqueeze(1))
    torch.index_select(src, 0, graph.col, out=graph.other_values(out))
    per_edge_(graph, out, dst, "add_", buffer)
    clear_padding_(graph, out)
    return out


def source_sums(graph: DiffusionGraph, values: Tensor, buffer: Tensor) -> Tensor:
    """The sum of one head's ``[E]`` values over each source's edges -> ``[N_src]`` (a
    segment sum in the transposed order); ``buffer`` is ``[E]`` scratch."""
    graph.transpose_values(values, out=buffer)
    out = torch.segment_reduce(graph.other_values(buffer), "sum", offsets=graph.transposed()[0])
    if graph.band:
        sums = graph.band_values(values).sum(1)  # [B, 3w]: per block, over its targets
        for sources, part in zip(graph.band_source_thirds(out), sums.split(graph.band, dim=1)):
            sources.add_(part)
    if graph.num_global:
        out_copies = graph.per_copy(out)
        for block, _, sources in graph.global_blocks(values):
            out_copies[:, sources] += block.sum(1)
    return out


def first_order(backward: Callable) -> Callable:
    """Marks a kernel's backward as first-order: asked for a differentiable gradient
    (``create_graph=True``, which runs backward in grad mode) it raises at once.

    torch's ``once_differentiable`` defers that error to a node that only ``.backward()``
    reaches: ``torch.autograd.grad(..., inputs=x)`` (a Hessian-vector product) skips it and
    returns a second derivative without the kernels' terms, and a loss linear in the output
    (``out.sum()``, a WGAN critic's mean) sends a constant gradient, for which it places no
    node at all: the gradient penalty's second derivative was silently wrong.
    """

    @functools.wraps(backward)
    def wrapper(ctx, *grads):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "graphdiff's attention kernels are first-order: cannot differentiate twice "
                "(a gradient with create_graph=True)"
            )
        return backward(ctx, *grads)

    return wrapper


# Every operator takes the structure first: six tensors, three numbers (band, num_global,
# copies); none of them has a gradient.
STRUCTURE_ARGS = 9
NO_STRUCTURE_GRADS = (None,) * STRUCTURE_ARGS


def optional_empty(x: Tensor, wanted: bool) -> Tensor:
    """``torch.empty_like(x)``, or an empty tensor where that gradient is not wanted (an
    operator returns tensors, never ``None``)."""
    return torch.empty_like(x) if wanted else x.new_empty(0)


def register_edge_scores(op: Any, backward: Any) -> None:
    """The fake kernels and the autograd of an edge-attention op.

    Both attention ops share one signature: ``op(*structure, a, b, param) -> attn [H, E]``
    (``a``, ``b`` per head, ``a.size(0) = H``) and ``backward(*structure, a, b, attn, grad,
    param, want_a, want_b) -> (grad_a, grad_b)``, each gradient empty unless wanted.
    """

    @op.register_fake
    def _fake(*inputs):
        # The sources' count is not needed for the number of edges.
        graph = DiffusionGraph.from_structure(inputs[:STRUCTURE_ARGS], num_src=0)
        a = inputs[STRUCTURE_ARGS]
        return a.new_empty(a.size(0), graph.num_edges)

    @backward.register_fake
    def _backward_fake(*inputs):
        a, b, _, _, _, want_a, want_b = inputs[STRUCTURE_ARGS:]
        return optional_empty(a, want_a), optional_empty(b, want_b)

    def setup(ctx: Any, inputs: Tuple[Any, ...], output: Tensor) -> None:
        *structure, band, num_global, copies, a, b, param = inputs
        ctx.param, ctx.dense = param, (band, num_global, copies)
        ctx.save_for_backward(*structure, a, b, output)

    @first_order  # written with out= kernels
    def grad(ctx: Any, grad_attn: Tensor) -> Tuple[Optional[Tensor], ...]:
        *structure, a, b, attn = ctx.saved_tensors
        want_a, want_b = ctx.needs_input_grad[STRUCTURE_ARGS : STRUCTURE_ARGS + 2]
        grad_a, grad_b = backward(
            *structure, *ctx.dense, a, b, attn, grad_attn, ctx.param, want_a, want_b
        )
        return (*NO_STRUCTURE_GRADS, grad_a if want_a else None, grad_b if want_b else None, None)

    op.register_autograd(grad, setup_context=setup)


# -- dot-product attention ------------------------------------------------------------------


@torch.library.custom_op("graphdiff::edge_attention", mutates_args=())
def edge_attention(
    crow: Tensor,
    col: Tensor,
    row: Tensor,
    crow_t: Tensor,
    col_t: Tensor,
    position_t: Tensor,
    band: int,
    num_global: int,
    copies: int,
    q: Tensor,
    k: Tensor,
    scale: float,
) -> Tensor:
    r"""One-hop attention :math:`\mathrm{softmax}_j(\mathrm{scale}\,q_i \cdot k_j)` on the
    edges, ``[H, E]``, from ``q [H, N_dst, C]`` and ``k [H, N_src, C]``: per head one SDDMM,
    then an in-place segment softmax. Its gradient saves ``q``, ``k`` and the output and is
    the softmax Jacobian and two SpMMs per head (:func:`edge_attention_backward`)."""
    graph = DiffusionGraph.from_structure(
        (crow, col, row, crow_t, col_t, position_t, band, num_global, copies), k.size(1)
    )
    attn = q.new_empty(q.size(0), graph.num_edges)
    buffer = attn.new_empty(graph.num_edges)
    q_scratch, k_scratch = rows_scratch(q), rows_scratch(k)
    bound = abs(scale) * max_abs(q, dim=-1) * max_abs(k, dim=-1)  # Cauchy-Schwarz
    for h, a in enumerate(attn):
        sddmm_(graph, a, dense_rows(q[h], q_scratch), dense_rows(k[h], k_scratch), scale=scale)
        segment_softmax_(graph, a, buffer, bound)
    return attn


@torch.library.custom_op("graphdiff::edge_attention_backward", mutates_args=())
def edge_attention_backward(
    crow: Tensor,
    col: Tensor,
    row: Tensor,
    crow_t: Tensor,
    col_t: Tensor,
    position_t: Tensor,
    band: int,
    num_global: int,
    copies: int,
    q: Tensor,
    k: Tensor,
    attn: Tensor,
    grad: Tensor,
    scale: float,
    want_q: bool,
    want_k: bool,
) -> Tuple[Tensor, Tensor]:
    """The gradients of :func:`edge_attention`'s ``q`` and ``k`` (each empty unless
    wanted) from that of its output ``attn``."""
    graph = DiffusionGraph.from_structure(
        (crow, col, row, crow_t, col_t, position_t, band, num_global, copies), k.size(1)
    )
    grad_q, grad_k = optional_empty(q, want_q), optional_empty(k, want_k)
    # Two allocations, not one [2, E]: each stays below the mmap threshold.
    d_score, buffer = attn.new_empty(graph.num_edges), attn.new_empty(graph.num_edges)
    # grad_q's product stages k and grad_k's stages q, so each gradient can pass through
    # the other operand's scratch (it has the rows and, via empty_like, the layout).
    q_scratch, k_scratch = rows_scratch(q), rows_scratch(k)
    for h in range(attn.size(0)):
        segment_softmax_backward_(graph, attn[h], grad[h], d_score, buffer).mul_(scale)
        if want_q:
            spmm_into(graph, grad_q[h], q_scratch, d_score, dense_rows(k[h], k_scratch))
        if want_k:
            graph.transpose_values(d_score, out=buffer)
            rows = dense_rows(q[h], q_scratch)
            spmm_into(graph, grad_k[h], k_scratch, d_score, rows, values_t=buffer)
    return grad_q, grad_k


register_edge_scores(edge_attention, edge_attention_backward)


# -- GAT attention --------------------------------------------------------------------------


@torch.library.custom_op("graphdiff::gat_attention", mutates_args=())
def gat_attention(
    crow: Tensor,
    col: Tensor,
    row: Tensor,
    crow_t: Tensor,
    col_t: Tensor,
    position_t: Tensor,
    band: int,
    num_global: int,
    copies: int,
    src: Tensor,
    dst: Tensor,
    slope: float,
) -> Tensor:
    r"""GAT's one-hop attention :math:`\mathrm{softmax}_j(\mathrm{LeakyReLU}(s_j + t_i))` on
    the edges, ``[H, E]``, from per-node scores ``s [H, N_src]`` and ``t [H, N_dst]``: per head
    two gathers, then the in-place segment softmax. Its gradient saves ``s``, ``t`` and the
    output, recomputes the scores (for the LeakyReLU's slope) and sums each edge's gradient
    into its target (a segment sum) and its source (one in the transposed order)."""
    graph = DiffusionGraph.from_structure(
        (crow, col, row, crow_t, col_t, position_t, band, num_global, copies), src.size(1)
    )
    attn = src.new_empty(src.size(0), graph.num_edges)
    buffer = attn.new_empty(graph.num_edges)
    bound = max(1.0, abs(slope)) * (max_abs(src) + max_abs(dst))
    for h, a in enumerate(attn):
        gather_scores_(graph, a, src[h], dst[h], buffer)
        torch.nn.functional.leaky_relu_(a, slope)
        segment_softmax_(graph, a, buffer, bound)
    return attn


@torch.library.custom_op("graphdiff::gat_attention_backward", mutates_args=())
def gat_attention_backward(
    crow: Tensor,
    col: Tensor,
    row: Tensor,
    crow_t: Tensor,
    col_t: Tensor,
    position_t: Tensor,
    band: int,
    num_global: int,
    copies: int,
    src: Tensor,
    dst: Tensor,
    attn: Tensor,
    grad: Tensor,
    slope: float,
    want_src: bool,
    want_dst: bool,
) -> Tuple[Tensor, Tensor]:
    """The gradients of :func:`gat_attention`'s scores ``src`` and ``dst`` (each empty
    unless wanted) from that of its output ``attn``."""
    graph = DiffusionGraph.from_structure(
        (crow, col, row, crow_t, col_t, position_t, band, num_global, copies), src.size(1)
    )
    grad_src, grad_dst = optional_empty(src, want_src), optional_empty(dst, want_dst)
    d_score, slopes, buffer = (attn.new_empty(graph.num_edges) for _ in range(3))
    for h in range(attn.size(0)):
        segment_softmax_backward_(graph, attn[h], grad[h], d_score, buffer)
        # LeakyReLU's derivative: 1 where the score is positive, the slope elsewhere.
        gather_scores_(graph, slopes, src[h], dst[h], buffer)
        d_score.mul_(slopes.gt_(0.0).mul_(1.0 - slope).add_(slope))
        if want_dst:
            grad_dst[h] = row_reduce(graph, d_score)
        if want_src:
            grad_src[h] = source_sums(graph, d_score, buffer)
    return grad_src, grad_dst


register_edge_scores(gat_attention, gat_attention_backward)


# -- diffusion ------------------------------------------------------------------------------


def diffusion_outputs(
    v: Tensor, num_dst: int, hops: int, save_history: bool
) -> Tuple[Tensor, Tensor]:
    """The empty outputs of :func:`diffusion` for values ``v [H, N_src, C]``: the result,
    ``[N_dst, H, C]`` when ``v`` is a view of a node-major tensor, else ``[H, N_dst, C]``,
    and the history ``[H, N_src, K, C]`` (empty without ``save_history``)."""
    heads, num_src, channels = v.shape
    result = empty_nodes(v, num_dst, is_node_major(v))
    history = v.new_empty(heads, num_src, hops, channels) if save_history else v.new_empty(0)
    return result, history


@torch.library.custom_op("graphdiff::diffusion", mutates_args=())
def diffusion(
    crow: Tensor,
    col: Tensor,
    row: Tensor,
    crow_t: Tensor,
    col_t: Tensor,
    position_t: Tensor,
    band: int,
    num_global: int,
    copies: int,
    attn: Tensor,
    v: Tensor,
    s: float,
    coeffs: List[float],
    masks: Optional[Tensor],
    keep: float,
    save_history: bool,
) -> Tuple[Tensor, Tensor]:
    r"""The recursion :math:`Z_0 = c_0 V`, :math:`Z_{m+1} = D_m(s\,A Z_m + c_{m+1} V)`
    for ``m < K``, output :math:`Z_K`, on attention ``A`` ``[H, E]`` (a stack's band padding
    0: those slots are products like any edge's) and values ``V`` ``[H, N, C]``;
    :math:`D_m` is an optional (hop) dropout, ``masks [K, H, N, C]`` (bool) divided by
    ``keep``. Returns ``(Z_K, history)``: ``Z_K`` is ``[N, H, C]`` when ``V`` is a
    view of a node-major tensor, else ``[H, N, C]`` (the caller takes the head-major view,
    :func:`heads_view`; an operator's output never aliases another tensor); ``history``,
    with ``save_history`` (for ``A``'s gradient), holds the hop inputs ``Z_0 .. Z_{K-1}`` as
    ``[H, N, K, C]``.

    PPR is ``s = 1 - alpha, c = (1, alpha, ..., alpha)`` (teleport ``alpha``); the heat
    kernel is its Horner form ``s = 1, c = (theta_K, ..., theta_0)``. The gradient is the
    adjoint recursion (``A^T`` SpMMs), with every hop's ``dA`` term summed by one SDDMM over
    all hops at once (:func:`diffusion_backward`).
    """
    graph = DiffusionGraph.from_structure(
        (crow, col, row, crow_t, col_t, position_t, band, num_global, copies), v.size(1)
    )
    hops = len(coeffs) - 1
    result, history = diffusion_outputs(v, graph.num_dst, hops, save_history)
    # Two scratch slots shared by all heads, used in turn (Z_0 may be V itself); each hop's
    # input is copied into the history, whose [N, K C] rows the gradient's one SDDMM reads.
    slots = v.new_empty(min(hops, 2), graph.num_src, v.size(2))
    out = heads_view(result, is_node_major(v))
    out_scratch = rows_scratch(out)  # strided heads: the last hop goes through it
    for h in range(v.size(0)):
        if coeffs[0] == 1.0:  # Z_0 = V: read V itself
            z = dense_rows(v[h], slots[0])
        else:
            z = torch.mul(v[h], coeffs[0], out=slots[0])
        for m in range(hops):
            if save_history:
                history[h, :, m].copy_(z)
            if m < hops - 1:
                nxt = slots[(m + 1) % len(slots)]
            else:
                nxt = out[h] if out_scratch is None else out_scratch
            # No teleport term when c = 0: also the bipartite case, where V and the
            # output differ in size.
            if coeffs[m + 1] != 0.0:
                spmm_(graph, nxt, attn[h], z, alpha=s, bias=v[h], beta=coeffs[m + 1])
            else:  # addmm(beta=0) would still read an input: this is as fast
                spmm_(graph, nxt, attn[h], z, alpha=s)
            if masks is not None:
                nxt.mul_(masks[m, h]).div_(keep)
            z = nxt
        if out_scratch is not None:
            out[h].copy_(z)
    return result, history


@diffusion.register_fake
def _diffusion_fake(*inputs):
    crow = inputs[0]
    _, v, _, coeffs, _, _, save_history = inputs[STRUCTURE_ARGS:]
    return diffusion_outputs(v, crow.size(0) - 1, len(coeffs) - 1, save_history)


@torch.library.custom_op("graphdiff::diffusion_backward", mutates_args=())
def diffusion_backward(
    crow: Tensor,
    col: Tensor,
    row: Tensor,
    crow_t: Tensor,
    col_t: Tensor,
    position_t: Tensor,
    band: int,
    num_global: int,
    copies: int,
    attn: Tensor,
    history: Tensor,
    grad: Tensor,
    s: float,
    coeffs: List[float],
    masks: Optional[Tensor],
    keep: float,
    node_major: bool,
    want_attn: bool,
) -> Tuple[Tensor, Tensor]:
    """The gradients of :func:`diffusion`'s ``attn`` (empty unless wanted; it needs the
    history) and ``v`` from that of its result, ``grad`` (in the result's layout,
    ``node_major`` or not)."""
    graph = DiffusionGraph.from_structure(
        (crow, col, row, crow_t, col_t, position_t, band, num_global, copies), crow_t.size(0) - 1
    )
    hops = len(coeffs) - 1
    grad = heads_view(grad, node_major)
    heads, _, channels = grad.shape
    grad_v = heads_view(empty_nodes(grad, graph.num_src, node_major), node_major)
    grad_attn = attn.new_empty(attn.shape) if want_attn else attn.new_empty(0)
    attn_t = attn.new_empty(graph.num_edges)  # one head's A^T, transposed order
    slots = grad.new_empty(2, graph.num_dst, channels).unbind(0)
    # Every hop's adjoint, [N, K C] rows against the history's for one SDDMM over all hops:
    # one product of K C channels runs faster than K of C.
    adjoints = grad.new_empty(graph.num_dst, hops, channels) if want_attn else None
    gv_scratch = rows_scratch(grad_v)
    for h in range(heads):
        values_t = graph.transpose_values(attn[h], out=attn_t)
        # g is the adjoint of hop m's output. Masking writes into it, and the sparse
        # products want it dense (a loss like out.sum() sends an expanded gradient), so
        # then it starts as a copy of the incoming gradient.
        g = grad[h]
        if masks is not None or not g.is_contiguous():
            g = slots[1].copy_(g)
        free = 0  # the slot g is not in
        g_v = (grad_v[h] if gv_scratch is None else gv_scratch).zero_()
        for m in reversed(range(hops)):
            if masks is not None:
                g.mul_(masks[m, h]).div_(keep)
            if coeffs[m + 1] != 0.0:
                g_v.add_(g, alpha=coeffs[m + 1])
            if want_attn:
                adjoints[:, m].copy_(g)
            if m > 0:
                g = spmm_(graph, slots[free], attn[h], g, alpha=s, values_t=values_t)
                free = 1 - free
            elif coeffs[0] != 0.0:  # the last adjoint only feeds V's gradient
                alpha = s * coeffs[0]
                spmm_(graph, g_v, attn[h], g, alpha=alpha, bias=g_v, values_t=values_t)
        if want_attn:  # dA = s sum_m g_{m+1} Z_m^T on the edges
            sddmm_(graph, grad_attn[h], adjoints.flatten(1), history[h].flatten(1), scale=s)
        if gv_scratch is not None:
            grad_v[h].copy_(g_v)
    return grad_attn, grad_v


@diffusion_backward.register_fake
def _diffusion_backward_fake(*inputs):
    crow_t = inputs[3]
    attn, _, grad, _, _, _, _, node_major, want_attn = inputs[STRUCTURE_ARGS:]
    grad_attn = attn.new_empty(attn.shape) if want_attn else attn.new_empty(0)
    grad = heads_view(grad, node_major)
    return grad_attn, heads_view(empty_nodes(grad, crow_t.size(0) - 1, node_major), node_major)


def _diffusion_setup(ctx: Any, inputs: Tuple[Any, ...], output: Tuple[Tensor, Tensor]) -> None:
    *structure, band, num_global, copies, attn, v, s, coeffs, masks, keep, save_history = inputs
    history = output[1]
    ctx.s, ctx.coeffs, ctx.keep, ctx.node_major = s, coeffs, keep, is_node_major(v)
    ctx.dense = (band, num_global, copies)
    ctx.mark_non_differentiable(history)
    # Else autograd hands backward a zero gradient of the (non-differentiable) history,
    # [H, N, K, C] filled anew at every step.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(*structure, attn, history, masks)


@first_order  # written with out= kernels
def _diffusion_grad(
    ctx: Any, grad: Optional[Tensor], _: Optional[Tensor]
) -> Tuple[Optional[Tensor], ...]:
    # Gradients are not materialised: None when the loss does not reach the result (a
    # gradcheck of another output of the caller's).
    if grad is None:
        return (*NO_STRUCTURE_GRADS, *(None,) * 7)
    *structure, attn, history, masks = ctx.saved_tensors
    want_attn = ctx.needs_input_grad[STRUCTURE_ARGS]
    if want_attn and history.numel() == 0 and attn.numel() > 0:
        raise RuntimeError("graphdiff::diffusion needs save_history=True for attn's gradient")
    grad_attn, grad_v = diffusion_backward(
        *structure,
        *ctx.dense,
        attn,
        history,
        grad,
        ctx.s,
        ctx.coeffs,
        masks,
        ctx.keep,
        ctx.node_major,
        want_attn,
    )
    return (*NO_STRUCTURE_GRADS, grad_attn if want_attn else None, grad_v, *(None,) * 5)


diffusion.register_autograd(_diffusion_grad, setup_context=_diffusion_setup)
