"""The fused kernels as autograd Functions on a :class:`~graphdiff.nn.graph.DiffusionGraph`.

Per-edge tensors are head-major ``[H, E]`` in CSR order, node tensors ``[H, N, C]``:
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
the same primitives as its forward:

- SDDMM (``torch.sparse.sampled_addmm``): ``out[e] = <a[i_e], b[j_e]>``, the per-edge dot
  product, never materialising the ``[E, H, C]`` products a gather would (except on graphs
  with more duplicate edges than their matrix has entries, which torch's SDDMM cannot hold:
  there a gather in chunks of ``DUPLICATES_CHUNK`` edges);
- SpMM (CSR ``@`` dense): ``out[i] = sum_e w[e] b[j_e]``, one hop;
- for GAT's scores, which are sums of per-node scalars, gathers of ``[N]`` into ``[E]`` and
  their adjoints, segment sums over each target's edges (CSR order) and each source's (the
  transposed order).
"""

from __future__ import annotations

import functools
from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor
from torch.autograd import Function

from graphdiff.nn._core import empty_nodes, heads_view, is_node_major
from graphdiff.nn.graph import DiffusionGraph

# Edges per gathered chunk where torch's SDDMM cannot serve (see accumulate_sddmm_).
DUPLICATES_CHUNK = 1 << 14


def accumulate_sddmm_(
    graph: DiffusionGraph, values: Tensor, a: Tensor, b: Tensor, scale: float = 1.0
) -> Tensor:
    """In place ``values[e] += scale * <a[i_e], b[j_e]>`` for one head: values ``[E]``,
    a ``[N_dst, C]``, b ``[N_src, C]``."""
    if graph.num_edges > graph.num_dst * graph.num_src:
        # Only duplicate edges get here: torch's sampled_addmm cuts the values of a CSR with
        # more entries than its matrix has down to that size (in place, with out=). Gathered
        # in chunks instead, so the [chunk, C] products stay small.
        for start in range(0, graph.num_edges, DUPLICATES_CHUNK):
            end = start + DUPLICATES_CHUNK
            products = a.index_select(0, graph.row[start:end]) * b.index_select(
                0, graph.col[start:end]
            )
            values[start:end].add_(products.sum(-1), alpha=scale)
        return values
    pattern = graph.csr(values)
    # out=pattern accumulates into `values` in place: without it torch copies the structure
    # and values first (3x the kernel's own time).
    torch.sparse.sampled_addmm(pattern, a, b.t(), alpha=scale, out=pattern)
    return values


def dense_rows(x: Tensor, scratch: Optional[Tensor]) -> Tensor:
    """One head's ``[N, C]`` operand with contiguous rows: ``x`` itself, or its copy in
    ``scratch`` when ``x`` is a head of a node-major ``[N, H, C]`` tensor (PyG's layout). The
    sparse products read the operand's rows in random order, and rows spread over H times
    the memory would miss the cache and TLB H times as often."""
    return x if x.is_contiguous() else scratch.copy_(x)


def rows_scratch(x: Tensor) -> Optional[Tensor]:
    """The ``[N, C]`` scratch that :func:`dense_rows` and :func:`mm_into` need for the heads
    of ``x [H, N, C]`` (``None`` when they are contiguous already)."""
    return None if x[0].is_contiguous() else x.new_empty(x.shape[1:])


def mm_into(out: Tensor, matrix: Tensor, x: Tensor, scratch: Optional[Tensor]) -> Tensor:
    """``out = matrix @ x`` for one head, through contiguous ``scratch`` when ``out`` is a
    head of a node-major tensor: torch would compute into a strided temporary, slower than
    the product plus one copy."""
    if scratch is None:
        return torch.mm(matrix, x, out=out)
    return out.copy_(torch.mm(matrix, x, out=scratch))


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
    torch.index_select(node_values, 0, graph.row, out=buffer)
    return getattr(values, op)(buffer if scale is None else buffer.mul_(scale))


def row_reduce(graph: DiffusionGraph, values: Tensor, reduce: str = "sum") -> Tensor:
    """``reduce`` ("sum" or "max") of one head's ``[E]`` values over each target's edges ->
    ``[N_dst]``; targets without edges get 0 (sum) or -inf (max)."""
    return torch.segment_reduce(values, reduce, offsets=graph.offsets())


def segment_softmax_(graph: DiffusionGraph, values: Tensor, buffer: Tensor) -> Tensor:
    """In place softmax of one head's ``[E]`` scores over each target's edges; ``buffer`` is
    ``[E]`` scratch."""
    per_edge_(graph, values, row_reduce(graph, values, "max"), "sub_", buffer).exp_()
    return per_edge_(graph, values, row_reduce(graph, values).reciprocal_(), "mul_", buffer)


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
    torch.index_select(src, 0, graph.col, out=out)
    return per_edge_(graph, out, dst, "add_", buffer)


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


class EdgeAttention(Function):
    r"""One-hop attention :math:`\mathrm{softmax}_j(\mathrm{scale}\,q_i \cdot k_j)` on the
    edges, ``[H, E]``, from ``q`` and ``k`` ``[H, N, C]``: per head one SDDMM, then an
    in-place segment softmax. Saves ``q``, ``k`` and the output; backward is the softmax
    Jacobian and two SpMMs per head."""

    @staticmethod
    def forward(ctx, graph: DiffusionGraph, q: Tensor, k: Tensor, scale: float) -> Tensor:
        attn = q.new_zeros(q.size(0), graph.num_edges)
        buffer = attn.new_empty(graph.num_edges)
        q_scratch, k_scratch = rows_scratch(q), rows_scratch(k)
        for h, a in enumerate(attn):
            accumulate_sddmm_(
                graph, a, dense_rows(q[h], q_scratch), dense_rows(k[h], k_scratch), scale=scale
            )
            segment_softmax_(graph, a, buffer)
        ctx.graph, ctx.scale = graph, scale
        ctx.save_for_backward(q, k, attn)
        return attn

    @staticmethod
    @first_order  # written with out= kernels
    def backward(ctx, grad: Tensor):
        graph, scale = ctx.graph, ctx.scale
        q, k, attn = ctx.saved_tensors
        want_q, want_k = ctx.needs_input_grad[1:3]
        grad_q = torch.empty_like(q) if want_q else None
        grad_k = torch.empty_like(k) if want_k else None
        # Two allocations, not one [2, E]: each stays below the mmap threshold.
        d_score, buffer = attn.new_empty(graph.num_edges), attn.new_empty(graph.num_edges)
        # grad_q's product stages k and grad_k's stages q, so each gradient can pass through
        # the other operand's scratch (it has the rows and, via empty_like, the layout).
        q_scratch, k_scratch = rows_scratch(q), rows_scratch(k)
        for h in range(attn.size(0)):
            segment_softmax_backward_(graph, attn[h], grad[h], d_score, buffer).mul_(scale)
            if want_q:
                mm_into(grad_q[h], graph.csr(d_score), dense_rows(k[h], k_scratch), q_scratch)
            if want_k:
                graph.transpose_values(d_score, out=buffer)
                mm_into(
                    grad_k[h],
                    graph.csr(buffer, transpose=True),
                    dense_rows(q[h], q_scratch),
                    k_scratch,
                )
        return None, grad_q, grad_k, None


class GATEdgeAttention(Function):
    r"""GAT's one-hop attention :math:`\mathrm{softmax}_j(\mathrm{LeakyReLU}(s_j + t_i))` on
    the edges, ``[H, E]``, from per-node scores ``s [H, N_src]`` and ``t [H, N_dst]``: per head
    two gathers, then the in-place segment softmax. Saves ``s``, ``t`` and the output;
    backward recomputes the scores (for the LeakyReLU's slope) and sums each edge's gradient
    into its target (a segment sum) and its source (one in the transposed order)."""

    @staticmethod
    def forward(ctx, graph: DiffusionGraph, src: Tensor, dst: Tensor, slope: float) -> Tensor:
        attn = src.new_empty(src.size(0), graph.num_edges)
        buffer = attn.new_empty(graph.num_edges)
        for h, a in enumerate(attn):
            gather_scores_(graph, a, src[h], dst[h], buffer)
            torch.nn.functional.leaky_relu_(a, slope)
            segment_softmax_(graph, a, buffer)
        ctx.graph, ctx.slope = graph, slope
        ctx.save_for_backward(src, dst, attn)
        return attn

    @staticmethod
    @first_order  # written with out= kernels
    def backward(ctx, grad: Tensor):
        graph, slope = ctx.graph, ctx.slope
        src, dst, attn = ctx.saved_tensors
        want_src, want_dst = ctx.needs_input_grad[1:3]
        grad_src = torch.empty_like(src) if want_src else None
        grad_dst = torch.empty_like(dst) if want_dst else None
        d_score, slopes, buffer = (attn.new_empty(graph.num_edges) for _ in range(3))
        for h in range(attn.size(0)):
            segment_softmax_backward_(graph, attn[h], grad[h], d_score, buffer)
            # LeakyReLU's derivative: 1 where the score is positive, the slope elsewhere.
            gather_scores_(graph, slopes, src[h], dst[h], buffer)
            d_score.mul_(slopes.gt_(0.0).mul_(1.0 - slope).add_(slope))
            if want_dst:
                grad_dst[h] = row_reduce(graph, d_score)
            if want_src:
                graph.transpose_values(d_score, out=buffer)
                grad_src[h] = torch.segment_reduce(
                    buffer, "sum", offsets=graph.offsets(transpose=True)
                )
        return None, grad_src, grad_dst, None


class Diffusion(Function):
    r"""The recursion :math:`Z_0 = c_0 V`, :math:`Z_{m+1} = D_m(s\,A Z_m + c_{m+1} V)`
    for ``m < K``, output :math:`Z_K`; :math:`D_m` is an optional (hop) dropout. ``V`` is
    ``[H, N, C]``; the output is ``[N, H, C]`` when ``V`` is a view of a node-major tensor,
    else ``[H, N, C]``: it must own its memory, since autograd forbids in-place changes of a
    view created inside a Function (``relu_()`` on a layer's output), so the caller takes
    the head-major view (:func:`heads_view`).

    PPR is ``s = 1 - alpha, c = (1, alpha, ..., alpha)`` (teleport ``alpha``); the heat
    kernel is its Horner form ``s = 1, c = (theta_K, ..., theta_0)``. Saves ``A`` ``[H, E]``,
    the hop inputs ``Z_0 .. Z_{K-1}`` as ``[H, K, N, C]`` (each hop writes straight into its
    slot) and the dropout masks; backward is the adjoint recursion (``A^T`` SpMMs), with each hop's
    ``dA`` term accumulated by one SDDMM as its adjoint is formed.
    """

    @staticmethod
    def forward(
        ctx,
        graph: DiffusionGraph,
        attn: Tensor,
        v: Tensor,
        s: float,
        coeffs: Sequence[float],
        masks: Optional[List[Tensor]],
        keep: float,
    ) -> Tensor:
        hops = len(coeffs) - 1
        heads, _, channels = v.shape
        save = ctx.needs_input_grad[1]
        # Hop m's input is slot m of the saved history; without a gradient for A two
        # scratch slots shared by all heads, used in turn (Z_0 may be V itself).
        zs = v.new_empty(heads, hops, graph.num_src, channels) if save else None
        scratch = None if save else v.new_empty(min(hops, 2), graph.num_src, channels)
        node_major = is_node_major(v)
        result = empty_nodes(v, graph.num_dst, node_major)
        out = heads_view(result, node_major)
        out_scratch = rows_scratch(out)  # strided heads: the last hop goes through it
        for h in range(heads):
            slots = zs[h] if save else scratch
            matrix = graph.csr(attn[h])
            if coeffs[0] == 1.0 and not save:  # Z_0 = V: read V itself, no copy to keep
                z = dense_rows(v[h], slots[0])
            else:
                z = torch.mul(v[h], coeffs[0], out=slots[0])
            for m in range(hops):
                if m < hops - 1:
                    nxt = slots[(m + 1) % len(slots)]
                else:
                    nxt = out[h] if out_scratch is None else out_scratch
                # No teleport term when c = 0: also the bipartite case, where V and the
                # output differ in size.
                if coeffs[m + 1] != 0.0:
                    torch.addmm(v[h], matrix, z, beta=coeffs[m + 1], alpha=s, out=nxt)
                else:  # addmm(beta=0) would still read an input: this is as fast
                    torch.mm(matrix, z, out=nxt)
                    if s != 1.0:
                        nxt.mul_(s)
                if masks is not None:
                    nxt.mul_(masks[m][h]).div_(keep)
                z = nxt
            if out_scratch is not None:
                out[h].copy_(z)
        ctx.graph, ctx.s, ctx.coeffs, ctx.masks, ctx.keep = graph, s, coeffs, masks, keep
        ctx.node_major = node_major
        ctx.save_for_backward(attn, zs)
        return result

    @staticmethod
    @first_order  # written with out= kernels
    def backward(ctx, grad: Tensor):
        graph, s, coeffs, masks, keep = ctx.graph, ctx.s, ctx.coeffs, ctx.masks, ctx.keep
        attn, zs = ctx.saved_tensors
        hops = len(coeffs) - 1
        grad = heads_view(grad, ctx.node_major)
        heads, _, channels = grad.shape
        grad_v = heads_view(empty_nodes(grad, graph.num_src, ctx.node_major), ctx.node_major)
        grad_attn = attn.new_zeros(attn.shape) if zs is not None else None
        attn_t = attn.new_empty(graph.num_edges)  # one head's s * A^T, transposed order
        slots = grad.new_empty(2, graph.num_dst, channels).unbind(0)
        gv_scratch = rows_scratch(grad_v)
        for h in range(heads):
            values_t = graph.transpose_values(attn[h], out=attn_t)
            matrix_t = graph.csr(values_t.mul_(s) if s != 1.0 else values_t, transpose=True)
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
                    g.mul_(masks[m][h]).div_(keep)
                if coeffs[m + 1] != 0.0:
                    g_v.add_(g, alpha=coeffs[m + 1])
                if zs is not None:
                    accumulate_sddmm_(graph, grad_attn[h], g, zs[h, m], scale=s)
                if m > 0:
                    g = torch.mm(matrix_t, g, out=slots[free])
                    free = 1 - free
                elif coeffs[0] != 0.0:  # the last adjoint only feeds V's gradient
                    torch.addmm(g_v, matrix_t, g, alpha=coeffs[0], out=g_v)
            if gv_scratch is not None:
                grad_v[h].copy_(g_v)
        return None, grad_attn, grad_v, None, None, None, None
