"""Fused autograd kernels on a :class:`~graphdiff.nn.graph.DiffusionGraph`.

Per-edge tensors are head-major ``[H, E]`` in CSR order, node tensors head-major
``[H, N, C]``. Every head shares the graph's one CSR structure, and each sparse product runs
on one head at a time: a product reads its dense operand in the pattern's (partly random)
column order, and with one head's ``[N, C]`` operand in flight instead of all heads' (as one
block-diagonal matrix for all heads would have) more of those reads hit the cache. For the
same reason the ``[K, N, C]`` hop history enters the ``dA`` SDDMM one hop at a time
(:mod:`benchmarks.profile_scaling`).

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


def spmm(graph: DiffusionGraph, values: Tensor, x: Tensor, transpose: bool = False,
         out: Optional[Tensor] = None, alpha: float = 1.0, add: Optional[Tensor] = None,
         beta: float = 1.0) -> Tensor:
    """``alpha * A @ x (+ beta * add)`` per head: values ``[H, E]``, x ``[H, N_cols, C]``,
    add ``[H, N_rows, C]`` -> ``[H, N_rows, C]`` (into ``out`` when given). For
    ``transpose=True`` (``A^T @ x``) the values are in
    :meth:`~graphdiff.nn.graph.DiffusionGraph.transpose_values` order."""
    heads, _, channels = x.shape
    rows = graph.num_src if transpose else graph.num_dst
    out = x.new_empty(heads, rows, channels) if out is None else out
    for h in range(heads):
        matrix = graph.csr(values[h], transpose)
        if add is None:
            torch.mm(matrix, x[h], out=out[h])
        else:  # the scaled sum in the same pass over the output
            torch.addmm(add[h], matrix, x[h], beta=beta, alpha=alpha, out=out[h])
    if add is None and alpha != 1.0:
        out.mul_(alpha)  # addmm(beta=0) would still read an input: this is as fast
    return out


def sddmm(graph: DiffusionGraph, a: Tensor, b: Tensor) -> Tensor:
    """Per-edge dot products summed over ``P`` parts, ``sum_p <a[h, p, i_e], b[h, p, j_e]>``:
    a ``[H, P, N_dst, C]``, b ``[H, P, N_src, C]`` -> ``[H, E]``."""
    heads, parts = a.shape[:2]
    values = a.new_zeros(heads, graph.num_edges)
    for h in range(heads):
        pattern = graph.csr(values[h])
        for p in range(parts):
            # out=pattern accumulates into `values` in place: without it torch copies the
            # structure and values first (3x the kernel's own time).
            torch.sparse.sampled_addmm(pattern, a[h, p], b[h, p].t(), out=pattern)
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
    given); one head at a time into one reused buffer, so the broadcast never costs a second
    ``[H, E]`` tensor."""
    gathered = values.new_empty(graph.num_edges)
    for h in range(values.size(0)):
        torch.index_select(node_values[h], 0, graph.row, out=gathered)
        getattr(values[h], op)(gathered if scale is None else gathered.mul_(scale[h]))
    return values


class EdgeAttention(Function):
    r"""One-hop attention :math:`\mathrm{softmax}_j(\mathrm{scale}\,q_i \cdot k_j)` on the
    edges, ``[H, E]``, from ``q`` and ``k`` ``[H, N, C]``: one SDDMM, then an in-place segment
    softmax. Saves ``q``, ``k`` and the output; backward is the softmax Jacobian on
    ``[H, E]`` and two SpMMs."""

    @staticmethod
    def forward(ctx, graph: DiffusionGraph, q: Tensor, k: Tensor, scale: float) -> Tensor:
        attn = sddmm(graph, q.unsqueeze(1), k.unsqueeze(1)).mul_(scale)
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
    the output are ``[H, N, C]``.

    PPR is ``s = 1 - alpha, c = (1, alpha, ..., alpha)``; the heat kernel is its Horner
    form ``s = 1, c = (theta_K, ..., theta_0)``. Saves ``A`` ``[H, E]``, the hop inputs
    ``Z_0 .. Z_{K-1}`` as ``[H, K, N, C]`` (each hop writes straight into its slot) and the
    dropout masks; backward is the adjoint recursion (``A^T`` SpMMs) plus one SDDMM over
    all hops for ``dA``.
    """

    @staticmethod
    def forward(ctx, graph: DiffusionGraph, attn: Tensor, v: Tensor, s: float,
                coeffs: Sequence[float], masks: Optional[List[Tensor]],
                keep: float) -> Tensor:
        hops = len(coeffs) - 1
        heads, _, channels = v.shape
        # Hop m's input lives in slot m; without a gradient for A two slots, used in turn.
        slots = hops if ctx.needs_input_grad[1] else min(hops, 2)
        zs = v.new_empty(heads, slots, graph.num_src, channels)
        z = torch.mul(v, coeffs[0], out=zs[:, 0])
        for m in range(hops):
            out = (v.new_empty(heads, graph.num_dst, channels) if m == hops - 1 else
                   zs[:, (m + 1) % slots])
            # No teleport term when c = 0: also the bipartite case, where V and the output
            # differ in size.
            spmm(graph, attn, z, out=out, alpha=s, add=v if coeffs[m + 1] != 0.0 else None,
                 beta=coeffs[m + 1])
            if masks is not None:
                out.mul_(masks[m]).div_(keep)
            z = out
        ctx.graph, ctx.s, ctx.coeffs, ctx.masks, ctx.keep = graph, s, coeffs, masks, keep
        ctx.save_for_backward(attn, zs if ctx.needs_input_grad[1] else None)
        return z

    @staticmethod
    def backward(ctx, grad: Tensor):
        graph, s, coeffs, masks, keep = ctx.graph, ctx.s, ctx.coeffs, ctx.masks, ctx.keep
        attn, zs = ctx.saved_tensors
        hops = len(coeffs) - 1
        heads, _, channels = grad.shape
        attn_t = graph.transpose_values(attn)
        # The adjoint G_m of hop m's output, after its dropout mask, lives in slot m: it is
        # both the input of the next A^T product and the left operand of dA.
        slots = hops if zs is not None else min(hops, 2)
        gs = grad.new_empty(heads, slots, graph.num_dst, channels)
        g = gs[:, (hops - 1) % slots]
        g.copy_(grad)
        grad_v = grad.new_zeros(heads, graph.num_src, channels)
        for m in reversed(range(hops)):
            if masks is not None:
                g.mul_(masks[m]).div_(keep)
            if coeffs[m + 1] != 0.0:
                grad_v.add_(g, alpha=coeffs[m + 1])
            out = grad_v.new_empty(grad_v.shape) if m == 0 else gs[:, (m - 1) % slots]
            g = spmm(graph, attn_t, g, transpose=True, out=out, alpha=s)
        grad_v.add_(g, alpha=coeffs[0])
        del attn_t, g  # before the SDDMM allocates dA
        grad_attn = sddmm(graph, gs, zs).mul_(s) if zs is not None else None
        return None, grad_attn, grad_v, None, None, None, None
