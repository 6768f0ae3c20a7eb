"""Fused autograd kernels on a :class:`~graphdiff.nn.graph.DiffusionGraph`.

All per-edge tensors are head-major ``[H, E]`` in CSR order and all node tensors head-major
``[H, N, C]``, so that one block-diagonal ``torch.sparse`` call covers every head. Each kernel
saves only ``[H, E]`` or ``[H, N, C]`` tensors for backward and computes its gradients with
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

from graphdiff.nn.graph import DiffusionGraph, sparse_csr


def spmm(graph: DiffusionGraph, values: Tensor, x: Tensor, transpose: bool = False) -> Tensor:
    """``A @ x`` per head: values ``[H, E]``, x ``[H, N_cols, C]`` -> ``[H, N_rows, C]``.
    For ``transpose=True`` (``A^T @ x``) the values are in transposed order."""
    heads, _, channels = x.shape
    out = graph.block_csr(values, transpose) @ x.reshape(-1, channels)
    return out.view(heads, -1, channels)


def sddmm(graph: DiffusionGraph, a: Tensor, b: Tensor) -> Tensor:
    """Per-edge dot products ``<a[h, i_e], b[h, j_e]>``: a ``[H, N_dst, C]``,
    b ``[H, N_src, C]`` -> ``[H, E]``."""
    heads, _, channels = a.shape
    crow, col, _ = graph.block(heads)
    values = a.new_zeros(heads * graph.num_edges)
    pattern = sparse_csr(crow, col, values, (heads * graph.num_dst, heads * graph.num_src))
    # out=pattern writes into `values` in place: without it torch copies the structure and
    # values first (3x the kernel's own time). The values must be finite: beta=0 still
    # multiplies them.
    torch.sparse.sampled_addmm(pattern, a.reshape(-1, channels), b.reshape(-1, channels).t(),
                               beta=0.0, out=pattern)
    return values.view(heads, -1)


def segment_reduce(graph: DiffusionGraph, values: Tensor, reduce: str) -> Tensor:
    """``reduce`` ("sum" or "max") of ``[H, E]`` values over each target's edges ->
    ``[H, N_dst]``; targets without edges get 0 (sum) or -inf (max)."""
    heads = values.size(0)
    seg = graph.block(heads)[2]
    return torch.segment_reduce(values.reshape(-1), reduce, offsets=seg).view(heads, -1)


def per_edge_(graph: DiffusionGraph, values: Tensor, node_values: Tensor, op: str) -> Tensor:
    """In place ``values[h, e] <op>= node_values[h, target(e)]``; one head at a time, so
    the broadcast never costs a second ``[H, E]`` tensor."""
    for h in range(values.size(0)):
        getattr(values[h], op)(node_values[h].index_select(0, graph.row))
    return values


class EdgeAttention(Function):
    r"""One-hop attention :math:`\mathrm{softmax}_j(\mathrm{scale}\,q_i \cdot k_j)` on the
    edges, ``[H, E]``: one SDDMM, then an in-place segment softmax. Saves ``q``, ``k`` and
    the output; backward is the softmax Jacobian on ``[H, E]`` and two SpMMs."""

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
        row_dot = segment_reduce(graph, d_score, "sum")
        for h in range(attn.size(0)):
            d_score[h].sub_(attn[h] * row_dot[h].index_select(0, graph.row))
        d_score.mul_(scale)
        grad_q = spmm(graph, d_score, k) if ctx.needs_input_grad[1] else None
        grad_k = None
        if ctx.needs_input_grad[2]:
            d_score = graph.transpose_values(d_score)  # frees the CSR-order copy
            grad_k = spmm(graph, d_score, q, transpose=True)
        return None, grad_q, grad_k, None


class Diffusion(Function):
    r"""The recursion :math:`Z_0 = c_0 V`, :math:`Z_{m+1} = D_m(s\,A Z_m + c_{m+1} V)`
    for ``m < K``, output :math:`Z_K`; :math:`D_m` is an optional (hop) dropout.

    PPR is ``s = 1 - alpha, c = (1, alpha, ..., alpha)``; the heat kernel is its Horner
    form ``s = 1, c = (theta_K, ..., theta_0)``. Saves ``A`` ``[H, E]``, the hop inputs
    ``Z_0 .. Z_{K-1}`` ``[K, H, N, C]`` and the dropout masks; backward is the adjoint
    recursion (``A^T`` SpMMs) plus a single SDDMM over all hops at once for ``dA``.
    """

    @staticmethod
    def forward(ctx, graph: DiffusionGraph, attn: Tensor, v: Tensor, s: float,
                coeffs: Sequence[float], masks: Optional[List[Tensor]],
                keep: float) -> Tensor:
        hops = len(coeffs) - 1
        heads, _, channels = v.shape
        csr = graph.block_csr(attn)
        need_attn_grad = ctx.needs_input_grad[1]
        # Hop inputs live side by side in one [H, N, K * C] buffer: backward needs them for
        # the one SDDMM that yields dA of all hops at once.
        zs = v.new_empty(heads, graph.num_src, hops * channels) if need_attn_grad else None
        v_flat = v.reshape(-1, channels)
        z = v_flat if coeffs[0] == 1.0 else v_flat * coeffs[0]
        for m in range(hops):
            if zs is not None:
                zs[..., m * channels:(m + 1) * channels] = z.view(heads, -1, channels)
            if coeffs[m + 1] != 0.0:  # s * A @ z + c * V in one pass over the output
                z = torch.addmm(v_flat, csr, z, beta=coeffs[m + 1], alpha=s)
            else:  # also the bipartite case, where V and the output differ in size
                z = csr @ z if s == 1.0 else (csr @ z).mul_(s)
            if masks is not None:
                z.mul_(masks[m].view(-1, channels)).div_(keep)
        z = z.view(heads, -1, channels)
        ctx.graph, ctx.s, ctx.coeffs, ctx.masks, ctx.keep = graph, s, coeffs, masks, keep
        ctx.save_for_backward(attn, zs)
        return z

    @staticmethod
    def backward(ctx, grad: Tensor):
        graph, s, coeffs, masks, keep = ctx.graph, ctx.s, ctx.coeffs, ctx.masks, ctx.keep
        attn, zs = ctx.saved_tensors
        hops = len(coeffs) - 1
        heads, _, channels = grad.shape
        csr_t = graph.block_csr(graph.transpose_values(attn), transpose=True)
        gs = grad.new_empty(heads, graph.num_dst, hops * channels) if zs is not None else None
        g = grad.contiguous()
        grad_v = g.new_zeros(heads, graph.num_src, channels)
        for m in reversed(range(hops)):
            if masks is not None:
                g = g * masks[m] / keep
            if coeffs[m + 1] != 0.0:
                grad_v.add_(g, alpha=coeffs[m + 1])
            if gs is not None:
                gs[..., m * channels:(m + 1) * channels] = g
            g = (csr_t @ g.reshape(-1, channels)).view(heads, -1, channels)
            if s != 1.0:
                g.mul_(s)  # addmm(beta=0) still allocates and reads: this is as fast
        grad_v.add_(g, alpha=coeffs[0])
        del csr_t, g  # before the SDDMM allocates dA
        grad_attn = sddmm(graph, gs, zs).mul_(s) if gs is not None else None
        return None, grad_attn, grad_v, None, None, None, None
