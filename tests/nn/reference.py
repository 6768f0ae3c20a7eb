"""Dense float64 references for attention diffusion (small graphs only)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def random_graph(
    num_nodes: int, num_edges: int, seed: int = 0, self_loops: bool = True, shuffle: bool = True
) -> Tensor:
    """A duplicate-free random edge_index, in random order unless ``shuffle=False``."""
    gen = torch.Generator().manual_seed(seed)
    flat = torch.randperm(num_nodes * num_nodes, generator=gen)[:num_edges]
    ei = torch.stack([flat % num_nodes, flat // num_nodes])
    if self_loops:
        loops = torch.arange(num_nodes).repeat(2, 1)
        ei = torch.cat([ei[:, ei[0] != ei[1]], loops], dim=1)
    if shuffle:
        return ei[:, torch.randperm(ei.size(1), generator=gen)]
    return ei[:, torch.argsort(ei[1] * num_nodes + ei[0])]


def dense_attention(q: Tensor, k: Tensor, edge_index: Tensor) -> Tensor:
    """``[H, N_dst, N_src]`` row-softmax of masked scores; rows without edges are zero."""
    C = q.size(2)
    scores = torch.einsum("ihc,jhc->hij", q, k) / math.sqrt(C)
    mask = torch.zeros(q.size(0), k.size(0), dtype=torch.bool)
    mask[edge_index[1], edge_index[0]] = True
    scores = scores.masked_fill(~mask, -math.inf)
    return torch.softmax(scores, dim=-1).nan_to_num(0.0)


def dense_diffuse(
    A: Tensor, v: Tensor, hops: int, alpha: float, kernel: str = "ppr", t: float = 1.0
) -> Tensor:
    """The PPR recursion or the heat series, on dense ``A [H, N, N]``."""
    vh = v.transpose(0, 1)  # [H, N, C]
    if kernel == "ppr":
        z = vh
        for _ in range(hops):
            z = (1 - alpha) * A @ z + alpha * vh
    else:
        theta = torch.tensor(
            [t**k / math.factorial(k) for k in range(hops + 1)], dtype=torch.float64
        )
        theta = theta / theta.sum()
        z, power = torch.zeros_like(vh), vh
        for k in range(hops + 1):
            z = z + theta[k] * power
            power = A @ power
    return z.transpose(0, 1)


def edge_values(A: Tensor, edge_index: Tensor) -> Tensor:
    """``[E, H]`` entries of dense ``A [H, N_dst, N_src]`` on the edges."""
    return A[:, edge_index[1], edge_index[0]].t()


def dense_layer(conv, x: Tensor, edge_index: Tensor) -> Tensor:
    """What an ``AttentionDiffusion`` layer computes, from its own projections, densely."""
    heads, channels = conv.heads, conv.out_channels
    x_src, x_dst = (x, x) if isinstance(x, Tensor) else x
    q = conv.lin_query(x_dst).view(-1, heads, channels)
    k = conv.lin_key(x_src).view(-1, heads, channels)
    v = conv.lin_value(x_src).view(-1, heads, channels)
    out = dense_diffuse(
        dense_attention(q, k, edge_index), v, conv.hops, conv.alpha, conv.kernel, conv.t
    )
    return out.reshape(out.size(0), -1) if conv.concat else out.mean(1)
