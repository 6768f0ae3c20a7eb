r"""Attention diffusion as functions: one-hop edge attention and its multi-hop diffusion.

:class:`~graphdiff.nn.AttentionDiffusion` runs exactly these functions: one of the two
one-hop attentions (:func:`edge_softmax_attention`, scaled dot products, or
:func:`edge_gat_attention`, GAT's additive scores), then :func:`diffuse`. All take any
adjacency :func:`~graphdiff.nn.diffusion_graph` accepts (an ``edge_index``, PyG ``EdgeIndex``,
``torch.sparse`` CSR/CSC/COO ``adj_t``, ``SparseTensor``, or a prebuilt
:class:`~graphdiff.nn.DiffusionGraph`, which skips building the structure) and never build an
``[E, H, C]`` tensor, forward or backward. float16 and bfloat16 features (autocast's) are
computed in float32 and the results returned in their dtype.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from graphdiff.checks import DIFFUSION_KERNELS, is_integer, is_real
from graphdiff.nn import _autograd, _core
from graphdiff.nn._core import recursion_coefficients
from graphdiff.nn.graph import DiffusionGraph, diffusion_graph


def _is_finite(x: Any) -> bool:
    """``math.isfinite`` by comparisons, which a SymFloat (a module's float attribute under
    ``torch.compile(dynamic=True)``) answers with a guard instead of a graph break."""
    return -math.inf < x < math.inf


def check_diffusion_args(
    hops: Any, alpha: Any, kernel: Any, t: Any, hop_dropout: Any = 0.0
) -> None:
    """Raise ``ValueError``/``TypeError`` naming the argument for invalid diffusion settings.

    Any integral / real number is accepted (NumPy scalars from a config or a sweep, as the
    layer's ``heads`` and ``dropout`` are); ``bool`` is not a number here."""
    if not is_integer(hops):
        raise TypeError(f"'hops' must be an int (got {type(hops).__name__})")
    if hops < 0:
        raise ValueError(f"'hops' must be >= 0 (got {hops})")
    if not is_real(alpha) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"'alpha' must be a float in [0, 1] (got {alpha!r})")
    if kernel not in DIFFUSION_KERNELS:
        raise ValueError(f"'kernel' must be one of {DIFFUSION_KERNELS} (got {kernel!r})")
    if not is_real(t) or not 0.0 <= t < math.inf:
        raise ValueError(f"'t' must be a finite float >= 0 (got {t!r})")
    if not is_real(hop_dropout) or not 0.0 <= hop_dropout < 1.0:
        raise ValueError(f"'hop_dropout' must be a float in [0, 1) (got {hop_dropout!r})")


def _wants_grad(*tensors: Tensor) -> bool:
    """Whether autograd will ask for the gradient of any of ``tensors``: the kernels then
    take the graph's transposed structure (and the diffusion keeps its hop inputs)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _check_features(name: str, x: Any) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"'{name}' must be a Tensor (got {type(x).__name__})")
    if not x.is_floating_point():
        raise TypeError(f"'{name}' must be a floating point tensor (got {x.dtype})")
    # No heads or no channels would only fail deep inside the kernels (and the default
    # score scale 1/sqrt(C) has no value at C = 0); zero nodes are a valid empty graph.
    if x.dim() != 3 or x.size(1) == 0 or x.size(2) == 0:
        raise ValueError(
            f"'{name}' must have shape [num_nodes, heads, channels] with "
            f"heads, channels >= 1 (got {list(x.shape)})"
        )


EDGE_ORDERS = ("input", "storage")


def _check_edge_order(edge_order: Any) -> None:
    if edge_order not in EDGE_ORDERS:
        raise ValueError(f"'edge_order' must be one of {EDGE_ORDERS} (got {edge_order!r})")


def _edges_last(attn: Tensor, graph: DiffusionGraph, edge_order: str) -> Tensor:
    """``[H, E]`` in storage order -> ``[E, H]`` in ``edge_order``."""
    return attn.t() if edge_order == "storage" else _core.edges_last(attn, graph)


def _num_nodes(num_nodes: Union[int, Tuple[int, int]]) -> Tuple[int, int]:
    """``num_nodes`` as a pair ``(N_src, N_dst)`` of ints."""
    pair = num_nodes if isinstance(num_nodes, (tuple, list)) else (num_nodes, num_nodes)
    try:  # ints or int-likes (NumPy integers, one-element integer tensors)
        sizes = tuple(operator.index(n) for n in pair)
    except TypeError:
        sizes = ()
    if len(sizes) != 2:
        raise TypeError(
            f"'num_nodes' must be an int or a pair of ints (N_src, N_dst) (got {num_nodes!r})"
        )
    return sizes


def _check_num_nodes(num_nodes: Tuple[int, int], features: Tuple[Optional[int], int]) -> None:
    if any(want is not None and n != want for n, want in zip(num_nodes, features)):
        raise ValueError(
            f"'num_nodes' {num_nodes} does not match the features (sources, targets) = {features}"
        )


def edge_softmax_attention(
    q: Tensor,
    k: Tensor,
    edge_index: Any,
    num_nodes: Union[int, Tuple[int, int], None] = None,
    scale: Optional[float] = None,
    *,
    edge_order: str = "input",
) -> Tensor:
    r"""One-hop attention :math:`A_{ij} = \mathrm{softmax}_{j \in \mathcal{N}(i)}
    (q_i \cdot k_j / \sqrt{C})` on the edges ``j -> i`` of the graph.

    Args:
        q (torch.Tensor): Queries ``[N_dst, H, C]``.
        k (torch.Tensor): Keys ``[N_src, H, C]``.
        edge_index: The adjacency (``edge_index[0]`` = key j, ``edge_index[1]`` = query i).
        num_nodes (int or (int, int), optional): ``N`` or ``(N_src, N_dst)``; checked
            against the features. (default: taken from ``k`` and ``q``)
        scale (float, optional): Score scale, a finite constant (a number or a 0-dim tensor
            without gradient).
            (default: :math:`1/\sqrt{C}`)
        edge_order (str, optional): ``"input"``, the adjacency's edge order, or
            ``"storage"``, the graph's storage order (see :class:`DiffusionGraph`), which
            skips reordering ``[E, H]`` values on a graph with dense parts: pass the result
            to :func:`diffuse` with the same order, and reorder it with
            ``graph.to_input_order``. (On short sequences the kernels share calls among
            heads, and on a graph with dense parts their layout is the stack's: the
            functions convert to and from it, which :class:`AttentionDiffusion`, keeping the
            stack's layout, skips.) (default: :obj:`"input"`)

    Returns:
        ``[E, H]`` attention in ``edge_order`` (possibly a non-contiguous view); each
        target's incoming weights sum to one; targets without edges have none.
    """
    _check_edge_order(edge_order)
    _check_features("q", q)
    _check_features("k", k)
    if q.shape[1:] != k.shape[1:] or q.dtype != k.dtype:
        raise ValueError(
            f"'q' and 'k' must agree in heads, channels and dtype "
            f"(got {list(q.shape)} {q.dtype} and {list(k.shape)} {k.dtype})"
        )
    if isinstance(scale, Tensor) and scale.dim() == 0 and not scale.requires_grad:
        scale = scale.item()  # a constant held in a tensor
    if scale is not None:
        if not is_real(scale):  # the kernels take a constant: no tensor with a gradient
            raise TypeError(
                f"'scale' must be a float, a 0-dim tensor without gradient or None "
                f"(got {type(scale).__name__})"
            )
        if not _is_finite(scale):  # an infinite scale gives inf - inf = NaN scores
            raise ValueError(f"'scale' must be finite (got {scale!r})")
        scale = float(scale)
    sizes = (k.size(0), q.size(0))
    if num_nodes is not None:
        _check_num_nodes(_num_nodes(num_nodes), sizes)
    graph = diffusion_graph(edge_index, sizes)
    scale = q.size(-1) ** -0.5 if scale is None else scale
    attn = _core.unstack_edges(softmax_attention_stacked(q, k, graph, scale), graph, q.size(1))
    return _edges_last(attn, graph, edge_order).to(q.dtype)


def softmax_attention_stacked(q: Tensor, k: Tensor, graph: DiffusionGraph, scale: float) -> Tensor:
    """:func:`edge_softmax_attention` on checked inputs, as ``[H / G, E_stack]`` in the
    storage order of the graph's stack of heads (:func:`graphdiff.nn._core.stack_edges`) and
    the compute dtype: what a layer hands to :func:`diffuse_stacked` without reordering the
    edges twice."""
    # Head-major views of the node-major features: the kernel runs one head (or one stack of
    # heads, on short sequences) at a time.
    stack, groups = _core.stacks(graph, q.size(1))
    q_heads = _core.stack_heads(_core.heads_first(_core.compute_dtype(q)), groups)
    k_heads = _core.stack_heads(_core.heads_first(_core.compute_dtype(k)), groups)
    structure = stack.structure(backward=_wants_grad(q_heads, k_heads))
    return _autograd.edge_attention(*structure, q_heads, k_heads, scale)


def edge_gat_attention(
    src_scores: Tensor,
    dst_scores: Tensor,
    edge_index: Any,
    num_nodes: Union[int, Tuple[int, int], None] = None,
    negative_slope: float = 0.2,
    *,
    edge_order: str = "input",
) -> Tensor:
    r"""GAT's one-hop attention :math:`A_{ij} = \mathrm{softmax}_{j \in \mathcal{N}(i)}
    \mathrm{LeakyReLU}(s_j + t_i)` on the edges ``j -> i`` of the graph, from per-node scores
    (for `GATConv <https://arxiv.org/abs/1710.10903>`_'s additive score
    :math:`\mathbf{a}_s^{\top} \mathbf{W} \mathbf{x}_j + \mathbf{a}_t^{\top} \mathbf{W}
    \mathbf{x}_i`: :math:`s_j = \mathbf{a}_s^{\top} \mathbf{W} \mathbf{x}_j` and
    :math:`t_i = \mathbf{a}_t^{\top} \mathbf{W} \mathbf{x}_i`, per head).

    Args:
        src_scores (torch.Tensor): Source scores :math:`s` ``[N_src, H]``.
        dst_scores (torch.Tensor): Target scores :math:`t` ``[N_dst, H]``.
        edge_index: The adjacency (``edge_index[0]`` = source j, ``edge_index[1]`` = target i).
        num_nodes (int or (int, int), optional): ``N`` or ``(N_src, N_dst)``; checked
            against the scores. (default: taken from the scores)
        negative_slope (float, optional): LeakyReLU's slope for negative scores.
            (default: :obj:`0.2`)
        edge_order (str, optional): ``"input"`` or ``"storage"``, as for
            :func:`edge_softmax_attention`. (default: :obj:`"input"`)

    Returns:
        ``[E, H]`` attention in ``edge_order`` (possibly a non-contiguous view); each
        target's incoming weights sum to one; targets without edges have none. Memory:
        ``O(E H)``, forward and backward.
    """
    _check_edge_order(edge_order)
    for name, scores in (("src_scores", src_scores), ("dst_scores", dst_scores)):
        if not isinstance(scores, Tensor):
            raise TypeError(f"'{name}' must be a Tensor (got {type(scores).__name__})")
        if not scores.is_floating_point():
            raise TypeError(f"'{name}' must be a floating point tensor (got {scores.dtype})")
        if scores.dim() != 2 or scores.size(1) == 0:
            raise ValueError(
                f"'{name}' must have shape [num_nodes, heads] with heads >= 1 "
                f"(got {list(scores.shape)})"
            )
    if src_scores.size(1) != dst_scores.size(1) or src_scores.dtype != dst_scores.dtype:
        raise ValueError(
            f"'src_scores' and 'dst_scores' must agree in heads and dtype (got "
            f"{list(src_scores.shape)} {src_scores.dtype} and "
            f"{list(dst_scores.shape)} {dst_scores.dtype})"
        )
    if not is_real(negative_slope) or not _is_finite(negative_slope):
        raise ValueError(f"'negative_slope' must be a finite float (got {negative_slope!r})")
    sizes = (src_scores.size(0), dst_scores.size(0))
    if num_nodes is not None:
        _check_num_nodes(_num_nodes(num_nodes), sizes)
    graph = diffusion_graph(edge_index, sizes)
    heads = src_scores.size(1)
    attn = gat_attention_stacked(src_scores, dst_scores, graph, float(negative_slope))
    attn = _core.unstack_edges(attn, graph, heads)
    return _edges_last(attn, graph, edge_order).to(src_scores.dtype)


def gat_attention_stacked(
    src_scores: Tensor, dst_scores: Tensor, graph: DiffusionGraph, negative_slope: float
) -> Tensor:
    """:func:`edge_gat_attention` on checked inputs, as ``[H / G, E_stack]`` in the storage
    order of the graph's stack of heads and the compute dtype (see
    :func:`softmax_attention_stacked`)."""
    stack, groups = _core.stacks(graph, src_scores.size(1))
    # Head-major [H, N] copies of the node-major scores: N H numbers, read per head.
    src_heads, dst_heads = (
        _core.stack_heads(_core.compute_dtype(scores).t().contiguous(), groups)
        for scores in (src_scores, dst_scores)
    )
    structure = stack.structure(backward=_wants_grad(src_heads, dst_heads))
    return _autograd.gat_attention(*structure, src_heads, dst_heads, negative_slope)


def diffuse(
    attn: Tensor,
    v: Tensor,
    edge_index: Any,
    hops: int = 5,
    alpha: float = 0.1,
    kernel: str = "ppr",
    t: float = 1.0,
    *,
    num_nodes: Union[int, Tuple[int, int], None] = None,
    hop_dropout: float = 0.0,
    training: bool = False,
    edge_order: str = "input",
) -> Tensor:
    r"""Multi-hop diffusion of one-hop attention ``A`` over values ``V``.

    .. math::
        \text{ppr:}\quad Z^{(0)} = V,\quad Z^{(k+1)} = (1 - \alpha) A Z^{(k)} + \alpha V,
        \quad \text{out} = Z^{(K)}

        \text{heat:}\quad \text{out} = \sum_{k=0}^{K} \theta_k A^k V,\quad
        \theta_k \propto e^{-t} t^k / k!,\ \textstyle\sum_k \theta_k = 1

    Args:
        attn (torch.Tensor): One-hop attention ``[E, H]`` in ``edge_order``.
        v (torch.Tensor): Values ``[N_src, H, C]``.
        edge_index: The adjacency (any type :func:`~graphdiff.nn.diffusion_graph` accepts).
        hops (int, optional): Number of hops :math:`K \ge 0`. (default: :obj:`5`)
        alpha (float, optional): Teleport probability in :math:`[0, 1]`. (default: :obj:`0.1`)
        kernel (str, optional): ``"ppr"`` or ``"heat"``. (default: :obj:`"ppr"`)
        t (float, optional): Heat kernel time :math:`t \ge 0`. (default: :obj:`1.0`)
        num_nodes (int or (int, int), optional): ``N`` or ``(N_src, N_dst)``; a graph with
            fewer targets than sources (or more) allows only ``hops=1, alpha=0``.
            (default: a prebuilt graph's sizes, else ``N_src`` both)
        hop_dropout (float, optional): Dropout probability applied to the features produced
            by every hop (a fresh mask per hop), in training only. (default: :obj:`0.0`)
        training (bool, optional): Whether ``hop_dropout`` is active. (default: :obj:`False`)
        edge_order (str, optional): ``"input"`` or ``"storage"``, the order of ``attn``'s
            edges, as for :func:`edge_softmax_attention`. (default: :obj:`"input"`)

    Returns:
        ``[N_dst, H, C]``. Memory: ``O(E H + K N H C)``; each hop is one sparse-dense product.
    """
    check_diffusion_args(hops, alpha, kernel, t, hop_dropout)
    _check_edge_order(edge_order)
    _check_features("v", v)
    if not isinstance(attn, Tensor) or attn.dim() != 2 or attn.size(1) != v.size(1):
        raise ValueError(
            f"'attn' must have shape [num_edges, {v.size(1)}] "
            f"(got {list(attn.shape) if isinstance(attn, Tensor) else attn!r})"
        )
    if attn.dtype != v.dtype:
        raise TypeError(f"'attn' and 'v' must share a dtype (got {attn.dtype}, {v.dtype})")
    if num_nodes is not None:
        sizes = _num_nodes(num_nodes)
    elif isinstance(edge_index, DiffusionGraph):
        sizes = (edge_index.num_src, edge_index.num_dst)
    else:
        sizes = (v.size(0), v.size(0))
    _check_num_nodes(sizes, (v.size(0), None))
    graph = diffusion_graph(edge_index, sizes)
    if attn.size(0) != graph.num_edges:
        raise ValueError(
            f"'attn' has {attn.size(0)} rows but the graph has {graph.num_edges} edges"
        )
    attn = _core.compute_dtype(attn)
    attn_heads = attn.t() if edge_order == "storage" else _core.edges_first(attn, graph)
    return diffuse_stacked(
        _core.stack_edges(attn_heads, graph),
        v,
        graph,
        hops,
        alpha,
        kernel,
        t,
        hop_dropout,
        training,
    )


def diffuse_stacked(
    attn: Tensor,
    v: Tensor,
    graph: DiffusionGraph,
    hops: int,
    alpha: float,
    kernel: str,
    t: float,
    hop_dropout: float,
    training: bool,
) -> Tensor:
    """:func:`diffuse` on checked inputs, with the attention ``[H / G, E_stack]`` in the
    storage order of the graph's stack of heads and the compute dtype, its band padding 0 (as
    the attention functions and :func:`graphdiff.nn._core.stack_edges` leave it)."""
    s, coeffs = recursion_coefficients(hops, alpha, kernel, t)
    _core.check_bipartite(graph, hops, coeffs)
    if hops == 0:
        return v
    dtype, v_heads = v.dtype, _core.heads_first(_core.compute_dtype(v))
    heads, node_major = v.size(1), _core.is_node_major(v_heads)
    stack, groups = _core.stacks(graph, heads)
    masks = None
    if training and hop_dropout > 0.0:
        shape = (hops, groups, stack.num_dst, v.size(2))
        masks = torch.empty(shape, dtype=torch.bool, device=v.device).bernoulli_(1.0 - hop_dropout)
    out, _ = _autograd.diffusion(
        *stack.structure(backward=_wants_grad(attn, v_heads)),
        attn.contiguous(),
        _core.stack_heads(v_heads, groups),
        s,
        coeffs,
        masks,
        1.0 - hop_dropout,
        _wants_grad(attn),  # the history of hop inputs, for A's gradient
    )
    out = _core.unstack_heads(out, heads, groups, node_major)
    return _core.heads_first(out).to(dtype)


__all__: Sequence[str] = [
    "edge_softmax_attention",
    "edge_gat_attention",
    "diffuse",
    "recursion_coefficients",
    "check_diffusion_args",
    "DIFFUSION_KERNELS",
]
