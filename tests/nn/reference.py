"""Dense float64 references for attention diffusion (small graphs only)."""

from __future__ import annotations

import math
from typing import Any, Iterator, Tuple

import torch
from torch import Tensor
from torch_geometric import EdgeIndex
from torch_geometric.typing import WITH_TORCH_SPARSE, SparseTensor

from graphdiff.nn import diffusion_graph


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


def dense_gat_attention(
    src_scores: Tensor, dst_scores: Tensor, edge_index: Tensor, negative_slope: float = 0.2
) -> Tensor:
    """``[H, N_dst, N_src]`` row-softmax of GAT's masked scores LeakyReLU(s_j + t_i)."""
    scores = dst_scores.t().unsqueeze(2) + src_scores.t().unsqueeze(1)
    scores = torch.where(scores > 0, scores, negative_slope * scores)
    mask = torch.zeros(dst_scores.size(0), src_scores.size(0), dtype=torch.bool)
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


def layer_attention(conv, x, edge_index: Tensor) -> Tensor:
    """The one-hop attention ``[H, N_dst, N_src]`` of an ``AttentionDiffusion`` layer, from its
    own weights, densely."""
    heads, channels = conv.heads, conv.out_channels
    x_src, x_dst = (x, x) if isinstance(x, Tensor) else x
    if conv.attention == "dot":
        q = conv.lin_query(x_dst).view(-1, heads, channels)
        k = conv.lin_key(x_src).view(-1, heads, channels)
        return dense_attention(q, k, edge_index)
    # GATConv: one W for both sides (lin_value), or lin_value and lin_query for a pair of sizes.
    lin_dst = conv.lin_value if conv.lin_query is None else conv.lin_query
    src = (conv.lin_value(x_src).view(-1, heads, channels) * conv.att_src).sum(-1)
    dst = (lin_dst(x_dst).view(-1, heads, channels) * conv.att_dst).sum(-1)
    return dense_gat_attention(src, dst, edge_index, conv.negative_slope)


def dense_layer(conv, x, edge_index: Tensor) -> Tensor:
    """What an ``AttentionDiffusion`` layer computes, from its own weights, densely."""
    heads, channels = conv.heads, conv.out_channels
    x_src = x if isinstance(x, Tensor) else x[0]
    v = conv.lin_value(x_src).view(-1, heads, channels)
    A = layer_attention(conv, x, edge_index)
    if A.size(1) == A.size(2):
        out = dense_diffuse(A, v, conv.hops, conv.alpha, conv.kernel, conv.t)
    else:  # bipartite: one hop without teleport
        out = torch.einsum("hij,jhc->ihc", A, v)
    out = out.reshape(out.size(0), -1) if conv.concat else out.mean(1)
    return out if conv.bias is None else out + conv.bias


def adjacencies(ei: Tensor, n: int) -> Iterator[Tuple[str, Any]]:
    """``(name, adjacency)`` of every type the layer takes, all holding the graph ``ei``."""
    value = torch.arange(ei.size(1), dtype=torch.float64)
    adj = torch.sparse_coo_tensor(ei.flip(0), value, (n, n)).coalesce()  # adj_t: rows = targets
    yield "edge_index", ei
    yield "EdgeIndex", EdgeIndex(ei, sparse_size=(n, n))
    yield "DiffusionGraph", diffusion_graph(ei, (n, n))
    yield "coo", adj
    shuffled = torch.randperm(ei.size(1), generator=torch.Generator().manual_seed(0))
    yield (
        "uncoalesced coo",
        torch.sparse_coo_tensor(ei.flip(0)[:, shuffled], value[shuffled], (n, n)),
    )
    yield "csr", adj.to_sparse_csr()
    yield "csc", adj.to_sparse_csc()
    if WITH_TORCH_SPARSE:
        yield "SparseTensor", SparseTensor.from_edge_index(ei, sparse_sizes=(n, n)).t()


def assert_same_values_and_gradients(out: Tensor, expected: Tensor, inputs: Tuple[Tensor, ...]):
    """``out`` equals ``expected``, and so do the gradients of ``inputs`` through each, for a
    loss whose gradient differs from node to node."""
    torch.testing.assert_close(out, expected)
    weight = torch.randn_like(out)
    got = torch.autograd.grad((out * weight).sum(), inputs)
    want = torch.autograd.grad((expected * weight).sum(), inputs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
