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
    """``A @ x`` per head: values ``[H, E]``, x ``[H, N_cols, C]`` -> ``[H, N_rows, C]``."""
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


def segment_sum(graph: DiffusionGraph, values: Tensor) -> Tensor:
    """Sum of ``[H, E]`` values over each target's edges -> ``[H, N_dst]``."""
    seg = graph.block(values.size(0))[2]
    return torch.segment_reduce(values.reshape(-1), "sum", offsets=seg).view(values.size(0), -1)


def per_edge(graph: DiffusionGraph, node_values: Tensor) -> Tensor:
    """Broadcast per-target values ``[H, N_dst]`` to the edges ``[H, E]``."""
    return node_values.index_select(1, graph.row)


class EdgeScores(Function):
    """``scale * <q_i, k_j>`` on every edge, ``[H, E]``; backward is two SpMMs."""

    @staticmethod
    def forward(ctx, graph: DiffusionGraph, q: Tensor, k: Tensor, scale: float) -> Tensor:
        ctx.graph, ctx.scale = graph, scale
        ctx.save_for_backward(q, k)
        return sddmm(graph, q, k).mul_(scale)

    @staticmethod
    def backward(ctx, grad: Tensor):
        graph, scale = ctx.graph, ctx.scale
        q, k = ctx.saved_tensors
        grad = grad.contiguous() * scale
        grad_q = spmm(graph, grad, k) if ctx.needs_input_grad[1] else None
        grad_k = spmm(graph, grad, q, transpose=True) if ctx.needs_input_grad[2] else None
        return None, grad_q, grad_k, None


class EdgeSoftmax(Function):
    """Softmax of ``[H, E]`` scores over each target's incoming edges (max-shifted)."""

    @staticmethod
    def forward(ctx, graph: DiffusionGraph, scores: Tensor) -> Tensor:
        heads = scores.size(0)
        seg = graph.block(heads)[2]
        row_max = torch.segment_reduce(scores.reshape(-1), "max", offsets=seg).view(heads, -1)
        out = (scores - per_edge(graph, row_max)).exp_()
        out.div_(per_edge(graph, segment_sum(graph, out)))
        ctx.graph = graph
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        graph = ctx.graph
        (out,) = ctx.saved_tensors
        prod = out * grad
        prod.sub_(out * per_edge(graph, segment_sum(graph, prod)))
        return None, prod


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
        csr_t = graph.block_csr(attn, transpose=True)
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
        grad_attn = sddmm(graph, gs, zs).mul_(s) if gs is not None else None
        return None, grad_attn, grad_v, None, None, None, None
