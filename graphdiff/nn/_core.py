r"""What every step of attention diffusion shares, each decided in one place: the layouts of
node and edge tensors, the float32 compute dtype of half-precision features, the recursion's
coefficients and the rule for bipartite graphs.

Layouts, with ``N`` nodes, ``H`` heads, ``C`` channels per head and ``E`` edges:

- ``[N, H * C]``: what the projections produce and the layer returns (:func:`split_heads`,
  :func:`merge_heads`);
- ``[N, H, C]`` (node-major): the public functional API's features, PyG's layout;
- ``[H, N, C]`` (head-major): what the kernels run on, one head at a time
  (:func:`heads_first`); a head-major *view* of a node-major tensor is taken as it is, each head
  passing through ``[N, C]`` scratch in the kernels, never converted as a whole;
- stacked heads: on short sequences ``G`` heads share one sparse call on the block-diagonal
  :meth:`~graphdiff.nn.DiffusionGraph.stacked` graph, ``[H, N, C]`` viewed as
  ``[H / G, G * N, C]`` (:func:`stack_heads`);
- per-edge values: ``[E, H]`` in the adjacency's edge order in the public API, ``[H, E]`` in
  the graph's storage order (:func:`edges_first`, :func:`edges_last`): for an adjacency sorted
  by target whose graph has no dense parts both are views of one tensor, else a reordering
  (which ``edge_order="storage"`` and the layer skip); the kernels take them in the storage
  order of the heads' stack, ``[H / G, E_stack]`` (:func:`stack_edges`,
  :func:`unstack_edges`): a view of ``[H, E]``, except on a graph with dense parts, whose stack
  keeps each part of all its heads together (a reordering, which the layer skips).
"""

from __future__ import annotations

import math
from typing import List, Tuple

import torch
from torch import Tensor

from graphdiff.nn.graph import DiffusionGraph

# torch's CPU sparse kernels (sampled_addmm, CSR addmm) have no half-precision versions:
# features in these dtypes (autocast's, for one) are computed in float32 and the result cast
# back to their dtype. On every device: the softmax and the hops accumulate sums over edges,
# which autocast runs in float32 as well.
HALF_DTYPES = (torch.float16, torch.bfloat16)


def compute_dtype(x: Tensor) -> Tensor:
    """``x`` in the dtype the kernels compute in: float32 for half precision, else as is."""
    return x.float() if x.dtype in HALF_DTYPES else x


# -- layouts ----------------------------------------------------------------------------------


def split_heads(x: Tensor, heads: int) -> Tensor:
    """``[N, H * C]`` -> node-major ``[N, H, C]`` (a view)."""
    return x.view(x.size(0), heads, x.size(1) // heads)


def merge_heads(x: Tensor, concat: bool) -> Tensor:
    """Node-major ``[N, H, C]`` -> ``[N, H * C]`` (``concat``, a view when it can be) or the
    mean over heads ``[N, C]``."""
    return x.reshape(x.size(0), x.size(1) * x.size(2)) if concat else x.mean(dim=1)


def heads_first(x: Tensor) -> Tensor:
    """``[N, H, C]`` <-> ``[H, N, C]``: a transposed view, never a copy."""
    return x.transpose(0, 1)


def edges_first(attn: Tensor, graph: DiffusionGraph) -> Tensor:
    """Per-edge ``[E, H]`` in the adjacency's order -> ``[H, E]`` in storage order (a view
    where the two agree, a gather otherwise)."""
    return graph.to_csr_order(attn).t()


def edges_last(attn: Tensor, graph: DiffusionGraph) -> Tensor:
    """Per-edge ``[H, E]`` in storage order -> ``[E, H]`` in the adjacency's order (the inverse of
    :func:`edges_first`)."""
    return graph.to_input_order(attn.t())


def is_node_major(x: Tensor) -> bool:
    """Whether ``x [H, N, C]`` is a head-major view of a node-major ``[N, H, C]`` tensor."""
    return x.size(0) > 1 and x.stride(0) < x.stride(1)


def empty_nodes(x: Tensor, rows: int, node_major: bool) -> Tensor:
    """An empty node tensor like ``x [H, N, C]`` with ``rows`` nodes: ``[rows, H, C]`` when
    ``node_major``, else ``[H, rows, C]`` (see :func:`heads_view`). A result in the caller's
    layout needs no conversion copy, and a fresh copy costs more than the copying itself once
    it is larger than glibc's mmap threshold (its pages fault in one by one)."""
    heads, _, channels = x.shape
    return x.new_empty((rows, heads, channels) if node_major else (heads, rows, channels))


def heads_view(x: Tensor, node_major: bool) -> Tensor:
    """``x`` as ``[H, N, C]``: the transpose of a node-major ``[N, H, C]`` tensor."""
    return x.transpose(0, 1) if node_major else x


def stacks(graph: DiffusionGraph, heads: int) -> Tuple[DiffusionGraph, int]:
    """``(graph of one stack, number of stacks)``: the heads share sparse calls as
    :meth:`DiffusionGraph.heads_per_call` decides (one stack per head on long sequences)."""
    per_call = graph.heads_per_call(heads)
    return graph.stacked(per_call), heads // per_call


def stack_heads(x: Tensor, groups: int) -> Tensor:
    """Head-major ``x [H, ...]`` as ``[groups, ...]``, each group's heads one after the
    other: the layout of :meth:`DiffusionGraph.stacked`. A view when ``x`` is contiguous; a
    whole-tensor copy for node-major features (with at most ``MAX_STACKED_NODES`` nodes per
    stack)."""
    if groups == x.size(0):
        return x
    # Split the heads, then merge each group's: under dynamic shapes inductor lowers one
    # reshape [H, N, C] -> [G, H / G * N, C] of a node-major x into two copies.
    return x.reshape(groups, x.size(0) // groups, *x.shape[1:]).flatten(1, 2)


def stack_edges(attn: Tensor, graph: DiffusionGraph) -> Tensor:
    """Per-edge ``[H, E]`` in the graph's storage order -> ``[H / G, E_stack]`` in the storage
    order of its stack of ``G`` heads (:meth:`DiffusionGraph.stacked`): a view where the
    stack's storage is its heads' one after the other, else a scatter (the stack's band
    padding 0)."""
    stack, groups = stacks(graph, attn.size(0))
    if not stack.interleaves_copies:
        return attn.reshape(groups, stack.num_edges)
    out = attn.new_zeros(groups, stack.num_edges)
    out[:, stack.copy_slots().flatten()] = attn.reshape(groups, -1)
    return out


def unstack_edges(attn: Tensor, graph: DiffusionGraph, heads: int) -> Tensor:
    """The inverse of :func:`stack_edges`: ``[H / G, E_stack]`` -> ``[H, E]``."""
    stack, _ = stacks(graph, heads)
    if not stack.interleaves_copies:
        return attn.reshape(heads, graph.num_edges)
    return attn[:, stack.copy_slots().flatten()].reshape(heads, graph.num_edges)


def unstack_heads(out: Tensor, heads: int, groups: int, node_major: bool) -> Tensor:
    """The diffusion kernel's result (in ``groups`` stacks) as ``[H, N, C]`` in the layout
    the values had: with one head per stack the kernel wrote that layout already."""
    if groups == heads:
        return heads_view(out, node_major)
    out = out.view(heads, -1, out.size(-1))
    return heads_view(out.transpose(0, 1).contiguous(), True) if node_major else out


# -- the recursion --------------------------------------------------------------------------


def recursion_coefficients(
    hops: int, alpha: float, kernel: str = "ppr", t: float = 1.0
) -> Tuple[float, Tuple[float, ...]]:
    r"""``(s, c)`` of the recursion :math:`Z_0 = c_0 V`, :math:`Z_{m+1} = s A Z_m + c_{m+1} V`
    whose :math:`Z_K` is the requested diffusion (arguments as checked by
    :func:`graphdiff.nn.functional.check_diffusion_args`).

    PPR: ``s = 1 - alpha``, ``c = (1, alpha, ..., alpha)``. Heat: Horner's scheme for
    :math:`\sum_{k \le K} \theta_k A^k V` with :math:`\theta_k \propto t^k / k!` normalised
    to sum to one, i.e. ``s = 1``, ``c = (theta_K, ..., theta_0)``.

    The weights :math:`\theta_k` of :math:`A^k` themselves, for analysis, come from
    ``analysis.diffusion_coefficients(alpha, hops, kernel, t)``.
    """
    hops, alpha, t = int(hops), float(alpha), float(t)  # plain Python numbers for the kernels
    if kernel == "ppr":
        return 1.0 - alpha, (1.0,) + (alpha,) * hops
    log_w: List[float] = [
        k * math.log(t) - math.lgamma(k + 1) if t > 0 else (0.0 if k == 0 else -math.inf)
        for k in range(hops + 1)
    ]
    top = max(log_w)
    w = [math.exp(x - top) for x in log_w]
    total = sum(w)
    return 1.0, tuple(x / total for x in reversed(w))


def check_bipartite(graph: DiffusionGraph, hops: int, coeffs: Tuple[float, ...]) -> None:
    """Raise ``ValueError`` unless the recursion can run on ``graph``: with fewer sources
    than targets (or more), only one hop without teleport (``Z_1 = A V``) is defined
    (``hops=0`` would return ``V``, which has a row per source)."""
    if not graph.is_square and (hops != 1 or any(c != 0.0 for c in coeffs[1:])):
        raise ValueError(
            f"diffusion over {hops} hops, or with alpha > 0, needs as many "
            f"sources as targets (got {graph.num_src} sources, {graph.num_dst} "
            f"targets); use hops=1, alpha=0.0 for bipartite cross-attention"
        )
