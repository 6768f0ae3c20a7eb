"""Fused autograd kernels on a :class:`~graphdiff.nn.graph.DiffusionGraph`.

Per-edge tensors are head-major ``[H, E]`` in CSR order. Node tensors are *chunked*:
``[H, Q, N, w]`` holds head ``h``'s channels ``q * w ... (q + 1) * w`` of every node as one
contiguous ``[N, w]`` matrix, with ``w`` chosen by :func:`chunk_width` so that a row is at most
one 64-byte cache line. A sparse product reads the rows of its dense operand in the pattern's
(partly random) column order; on a chunk of ``N * 64`` bytes instead of all heads' ``H * N * C``
floats those reads stay in cache and the TLB far longer, which is what keeps time linear in
``N`` (:mod:`benchmarks.profile_scaling`). Every head shares the graph's one CSR structure.

Each kernel saves only ``[H, E]`` or node tensors for backward and computes its gradients with
the same two primitives as its forward:

- SDDMM (``torch.sparse.sampled_addmm``): ``out[e] = <a[i_e], b[j_e]>``, the per-edge dot
  product, never materialising the ``[E, H, C]`` products a gather would;
- SpMM (CSR ``@`` dense): ``out[i] = sum_e w[e] b[j_e]``, one hop.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import Tensor
from torch.autograd import Function

from graphdiff.nn.graph import DiffusionGraph

_CACHE_LINE_BYTES = 64
_SMALL_OPERAND_BYTES = 1 << 20  # a head's whole [N, C] operand stays in cache below this


def chunk_width(num_nodes: int, channels: int, dtype: torch.dtype) -> int:
    """Channels per chunk: all ``channels`` when a head's ``[N, C]`` operand is small enough
    to stay in cache anyway, else the largest divisor of ``channels`` whose row fits in one
    64-byte cache line, unless that leaves rows under half a line (as a prime ``C`` would):
    then splitting costs more line reads than it saves, and the chunk is all ``channels``."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    if num_nodes * channels * itemsize <= _SMALL_OPERAND_BYTES:
        return channels
    limit = max(1, _CACHE_LINE_BYTES // itemsize)
    width = max(w for w in range(1, min(channels, limit) + 1) if channels % w == 0)
    return width if 2 * width >= limit else channels


def to_chunks(x: Tensor, width: int) -> Tensor:
    """Head-major ``[H, N, C]`` (any strides) -> chunked ``[H, C / w, N, w]``, contiguous."""
    heads, nodes, channels = x.shape
    return x.reshape(heads, nodes, channels // width, width).transpose(1, 2).contiguous()


def from_chunks(x: Tensor) -> Tensor:
    """Chunked ``[H, Q, N, w]`` -> head-major ``[H, N, Q * w]``."""
    return x.transpose(1, 2).flatten(2)


def spmm(graph: DiffusionGraph, values: Tensor, x: Tensor, transpose: bool = False,
         out: Optional[Tensor] = None) -> Tensor:
    """``A @ x`` per head: values ``[H, E]``, x ``[H, Q, N_cols, w]`` ->
    ``[H, Q, N_rows, w]`` (into ``out`` when given). For ``transpose=True`` (``A^T @ x``) the
    values are in :meth:`~graphdiff.nn.graph.DiffusionGraph.transpose_values` order."""
    heads, chunks, _, width = x.shape
    rows = graph.num_src if transpose else graph.num_dst
    out = x.new_empty(heads, chunks, rows, width) if out is None else out
    for h in range(heads):
        matrix = graph.csr(values[h], transpose)
        for q in range(chunks):
            torch.mm(matrix, x[h, q], out=out[h, q])
    return out


def sddmm(graph: DiffusionGraph, a: Tensor, b: Tensor) -> Tensor:
    """Per-edge dot products ``sum_q <a[h, q, i_e], b[h, q, j_e]>``: a ``[H, Q, N_dst, D]``,
    b ``[H, Q, N_src, D]`` -> ``[H, E]``."""
    heads, chunks = a.shape[:2]
    values = a.new_zeros(heads, graph.num_edges)
    for h in range(heads):
        pattern = graph.csr(values[h])
        for q in range(chunks):
            # out=pattern accumulates into `values` in place: without it torch copies the
            # structure and values first (3x the kernel's own time).
            torch.sparse.sampled_addmm(pattern, a[h, q], b[h, q].t(), out=pattern)
    return values


def segment_reduce(graph: DiffusionGraph, values: Tensor, reduce: str) -> Tensor:
    """``reduce`` ("sum" or "max") of ``[H, E]`` values over each target's edges ->
    ``[H, N_dst]``; targets without edges get 0 (sum) or -inf (max)."""
    heads = values.size(0)
    return torch.segment_reduce(values.reshape(-1), reduce,
                                offsets=graph.segments(heads)).view(heads, -1)


def per_edge_(graph: DiffusionGraph, values: Tensor, node_values: Tensor, op: str,
              scale: Optional[Tensor] = None) -> Tensor:
    """In place ``values[h, e] <op>= node_values[h, target(e)]`` (times ``scale[h, e]`` when
    given); one head at a time, so the broadcast never costs a second ``[H, E]`` tensor."""
    for h in range(values.size(0)):
        gathered = node_values[h].index_select(0, graph.row)
        getattr(values[h], op)(gathered if scale is None else gathered.mul_(scale[h]))
    return values


class EdgeAttention(Function):
    r"""One-hop attention :math:`\mathrm{softmax}_j(\mathrm{scale}\,q_i \cdot k_j)` on the
    edges, ``[H, E]``, from chunked ``q`` and ``k``: one SDDMM, then an in-place segment
    softmax. Saves ``q``, ``k`` and the output; backward is the softmax Jacobian on
    ``[H, E]`` and two SpMMs."""

    @staticmethod
    def forward(ctx, graph: DiffusionGraph, q: Tensor, k: Tensor, scale: float) -> Tensor:
        attn = sddmm(graph, q, k).mul_(scale)
        per_edge_(graph, attn, segment_reduce(graph, attn, "max"), "sub_").exp_()
        per_edge_(graph, attn, segment_reduce(graph, attn, "sum").reciprocal_(), "mul_")
        ctx.graph, ctx.scale = graph, scale
        ctx.save_for_backward(q, k, attn)
        return attn

    @staticmethod
    def backward(ctx, grad: Tensor):
        graph, scale = ctx.graph, ctx.scale
        q, k, attn = ctx.saved_tensors
        # d score = scale * A * (dA - sum_j A dA): the softmax Jacobian, on [H, E] only.
        d_score = attn * grad
        per_edge_(graph, d_score, segment_reduce(graph, d_score, "sum"), "sub_", scale=attn)
        d_score.mul_(scale)
        grad_q = spmm(graph, d_score, k) if ctx.needs_input_grad[1] else None
        grad_k = None
        if ctx.needs_input_grad[2]:
            d_score = graph.transpose_values(d_score)  # frees the CSR-order copy
            grad_k = spmm(graph, d_score, q, transpose=True)
        return None, grad_q, grad_k, None


class Diffusion(Function):
    r"""The recursion :math:`Z_0 = c_0 V`, :math:`Z_{m+1} = D_m(s\,A Z_m + c_{m+1} V)`
    for ``m < K``, output :math:`Z_K`; :math:`D_m` is an optional (hop) dropout. ``V`` and
    the output are chunked ``[H, Q, N, w]``.

    PPR is ``s = 1 - alpha, c = (1, alpha, ..., alpha)``; the heat kernel is its Horner
    form ``s = 1, c = (theta_K, ..., theta_0)``. Saves ``A`` ``[H, E]``, the hop inputs
    ``Z_0 .. Z_{K-1}`` side by side as ``[H, Q, N, K * w]`` and the dropout masks; backward
    is the adjoint recursion (``A^T`` SpMMs) plus one SDDMM over all hops at once for
    ``dA``.
    """

    @staticmethod
    def forward(ctx, graph: DiffusionGraph, attn: Tensor, v: Tensor, s: float,
                coeffs: Sequence[float], masks: Optional[List[Tensor]],
                keep: float) -> Tensor:
        hops = len(coeffs) - 1
        heads, chunks, _, width = v.shape
        need_attn_grad = ctx.needs_input_grad[1]
        zs = v.new_empty(heads, chunks, graph.num_src, hops * width) if need_attn_grad else None
        z = v if coeffs[0] == 1.0 else v * coeffs[0]
        # Intermediate hops alternate between two buffers; only the output is fresh.
        spare = [v.new_empty(heads, chunks, graph.num_dst, width) for _ in range(min(hops - 1, 2))]
        for m in range(hops):
            if zs is not None:
                zs[..., m * width:(m + 1) * width] = z
            out = spare[m % 2] if m < hops - 1 else v.new_empty(heads, chunks, graph.num_dst,
                                                               width)
            for h in range(heads):
                matrix = graph.csr(attn[h])
                for q in range(chunks):
                    if coeffs[m + 1] != 0.0:  # s * A @ z + c * V in one pass over the output
                        torch.addmm(v[h, q], matrix, z[h, q], beta=coeffs[m + 1], alpha=s,
                                    out=out[h, q])
                    else:  # also the bipartite case, where V and the output differ in size
                        torch.mm(matrix, z[h, q], out=out[h, q])
            if coeffs[m + 1] == 0.0 and s != 1.0:
                out.mul_(s)
            if masks is not None:
                out.mul_(masks[m]).div_(keep)
            z = out
        ctx.graph, ctx.s, ctx.coeffs, ctx.masks, ctx.keep = graph, s, coeffs, masks, keep
        ctx.save_for_backward(attn, zs)
        return z

    @staticmethod
    def backward(ctx, grad: Tensor):
        graph, s, coeffs, masks, keep = ctx.graph, ctx.s, ctx.coeffs, ctx.masks, ctx.keep
        attn, zs = ctx.saved_tensors
        hops = len(coeffs) - 1
        heads, chunks, _, width = grad.shape
        attn_t = graph.transpose_values(attn)
        gs = grad.new_empty(heads, chunks, graph.num_dst, hops * width) if zs is not None else None
        g = grad.contiguous()
        grad_v = g.new_zeros(heads, chunks, graph.num_src, width)
        spare = [g.new_empty(heads, chunks, graph.num_src, width) for _ in range(min(hops, 2))]
        for m in reversed(range(hops)):
            if masks is not None:
                g = g * masks[m] / keep
            if coeffs[m + 1] != 0.0:
                grad_v.add_(g, alpha=coeffs[m + 1])
            if gs is not None:
                gs[..., m * width:(m + 1) * width] = g
            g = spmm(graph, attn_t, g, transpose=True, out=spare[m % 2])
            if s != 1.0:
                g.mul_(s)  # addmm(beta=0) still allocates and reads: this is as fast
        grad_v.add_(g, alpha=coeffs[0])
        del attn_t, g, spare  # before the SDDMM allocates dA
        grad_attn = sddmm(graph, gs, zs).mul_(s) if gs is not None else None
        return None, grad_attn, grad_v, None, None, None, None
