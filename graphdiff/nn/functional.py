r"""Functional core of attention diffusion: one-hop edge attention and its multi-hop diffusion.

Both functions take any adjacency :func:`graphdiff.nn.graph.as_graph` accepts (an
``edge_index``, PyG ``EdgeIndex``, ``torch.sparse`` CSR/CSC/COO ``adj_t``, ``SparseTensor`` or a
prebuilt :class:`~graphdiff.nn.graph.DiffusionGraph`) and never build an ``[E, H, C]`` tensor,
forward or backward. float16 and bfloat16 features (autocast's) are computed in float32 and
the results returned in their dtype (:data:`HALF_DTYPES`).
"""
from __future__ import annotations

import math
import operator
import warnings
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from graphdiff.checks import is_integer, is_real
from graphdiff.nn.graph import DiffusionGraph, as_graph
from graphdiff.nn.kernels import Diffusion, EdgeAttention, heads_view, is_node_major

KERNELS = ("ppr", "heat")


def check_diffusion_args(hops: Any, alpha: Any, kernel: Any, t: Any,
                         hop_dropout: Any = 0.0) -> None:
    """Raise ``ValueError``/``TypeError`` naming the argument for invalid diffusion settings.

    Any integral / real number is accepted (NumPy scalars from a config or a sweep, as the
    layer's ``heads`` and ``dropout`` are); ``bool`` is not a number here."""
    if not is_integer(hops):
        raise TypeError(f"'hops' must be an int (got {type(hops).__name__})")
    if hops < 0:
        raise ValueError(f"'hops' must be >= 0 (got {hops})")
    if not is_real(alpha) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"'alpha' must be a float in [0, 1] (got {alpha!r})")
    if kernel not in KERNELS:
        raise ValueError(f"'kernel' must be one of {KERNELS} (got {kernel!r})")
    if not is_real(t) or not t >= 0.0 or math.isinf(t):
        raise ValueError(f"'t' must be a finite float >= 0 (got {t!r})")
    if not is_real(hop_dropout) or not 0.0 <= hop_dropout < 1.0:
        raise ValueError(f"'hop_dropout' must be a float in [0, 1) (got {hop_dropout!r})")


def recursion_coefficients(hops: int, alpha: float, kernel: str = "ppr",
                           t: float = 1.0) -> Tuple[float, List[float]]:
    r"""``(s, c)`` of the recursion :math:`Z_0 = c_0 V`, :math:`Z_{m+1} = s A Z_m + c_{m+1} V`
    whose :math:`Z_K` is the requested diffusion.

    PPR: ``s = 1 - alpha``, ``c = (1, alpha, ..., alpha)``. Heat: Horner's scheme for
    :math:`\sum_{k \le K} \theta_k A^k V` with :math:`\theta_k \propto t^k / k!` normalised
    to sum to one, i.e. ``s = 1``, ``c = (theta_K, ..., theta_0)``.

    The weights :math:`\theta_k` of :math:`A^k` themselves, for analysis, come from
    ``analysis.diffusion_coefficients(alpha, hops, kernel, t)``.
    """
    hops, alpha, t = int(hops), float(alpha), float(t)  # plain Python numbers for the kernels
    if kernel == "ppr":
        return 1.0 - alpha, [1.0] + [alpha] * hops
    log_w = [k * math.log(t) - math.lgamma(k + 1) if t > 0 else (0.0 if k == 0 else -math.inf)
             for k in range(hops + 1)]
    top = max(log_w)
    w = [math.exp(x - top) for x in log_w]
    total = sum(w)
    return 1.0, [x / total for x in reversed(w)]


def diffusion_coefficients(hops: int, alpha: float, kernel: str = "ppr",
                           t: float = 1.0) -> Tuple[float, List[float]]:
    """Deprecated: the former name of :func:`recursion_coefficients`, which it shared with
    ``analysis.diffusion_coefficients`` (other arguments, other result)."""
    warnings.warn("graphdiff.nn.functional.diffusion_coefficients is renamed "
                  "recursion_coefficients; for the weights of A^k use "
                  "analysis.diffusion_coefficients(alpha, hops, kernel, t)",
                  DeprecationWarning, stacklevel=2)
    return recursion_coefficients(hops, alpha, kernel, t)


def _check_features(name: str, x: Any) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"'{name}' must be a Tensor (got {type(x).__name__})")
    if not x.is_floating_point():
        raise TypeError(f"'{name}' must be a floating point tensor (got {x.dtype})")
    # No heads or no channels would only fail deep inside the kernels (and the default
    # score scale 1/sqrt(C) has no value at C = 0); zero nodes are a valid empty graph.
    if x.dim() != 3 or x.size(1) == 0 or x.size(2) == 0:
        raise ValueError(f"'{name}' must have shape [num_nodes, heads, channels] with "
                         f"heads, channels >= 1 (got {list(x.shape)})")


def _num_nodes(num_nodes: Union[int, Tuple[int, int], None],
               default: Tuple[int, int]) -> Tuple[int, int]:
    if num_nodes is None:
        return default
    pair = num_nodes if isinstance(num_nodes, (tuple, list)) else (num_nodes, num_nodes)
    try:  # ints or int-likes (NumPy integers, one-element integer tensors)
        sizes = tuple(operator.index(n) for n in pair)
    except TypeError:
        sizes = ()
    if len(sizes) != 2:
        raise TypeError(f"'num_nodes' must be an int or a pair of ints (N_src, N_dst) "
                        f"(got {num_nodes!r})")
    if sizes != default:
        raise ValueError(f"'num_nodes' {num_nodes} does not match the features "
                         f"(sources, targets) = {default}")
    return sizes


def check_bipartite_diffusion(graph: DiffusionGraph, hops: int,
                              coeffs: Sequence[float]) -> None:
    """Raise ``ValueError`` unless the recursion can run on ``graph``: with fewer sources
    than targets (or more), only one hop without teleport (``Z_1 = A V``) is defined
    (``hops=0`` would return ``V``, which has a row per source)."""
    if not graph.is_square and (hops != 1 or any(c != 0.0 for c in coeffs[1:])):
        raise ValueError(f"diffusion over {hops} hops, or with alpha > 0, needs as many "
                         f"sources as targets (got {graph.num_src} sources, {graph.num_dst} "
                         f"targets); use hops=1, alpha=0.0 for bipartite cross-attention")


def stacks(graph: DiffusionGraph, heads: int) -> Tuple[DiffusionGraph, int]:
    """``(graph of one stack, number of stacks)``: the heads share sparse calls as
    :meth:`DiffusionGraph.heads_per_call` decides (one stack per head on long sequences)."""
    per_call = graph.heads_per_call(heads)
    return graph.stacked(per_call), heads // per_call


def stack_heads(x: Tensor, groups: int) -> Tensor:
    """Head-major ``x [H, ...]`` as ``[groups, ...]``, each group's heads one after the
    other: the layout of :meth:`DiffusionGraph.stacked`. A view when ``x`` is contiguous; a
    whole-tensor copy for node-major features (``H N C``, with at most
    ``MAX_STACKED_NODES`` nodes per stack)."""
    return x if groups == x.size(0) else x.reshape(groups, -1, *x.shape[2:])


# torch's CPU sparse kernels (sampled_addmm, CSR addmm) have no half-precision versions:
# features in these dtypes (autocast's, for one) are computed in float32 and the result cast
# back to their dtype. On every device: the softmax and the hops accumulate sums over edges,
# which autocast runs in float32 as well.
HALF_DTYPES = (torch.float16, torch.bfloat16)


@torch.compiler.disable
def attention_heads_first(q: Tensor, k: Tensor, graph: DiffusionGraph,
                          scale: Optional[float] = None) -> Tensor:
    """:func:`edge_softmax_attention` on head-major ``[H, N, C]`` features (contiguous, or
    views of node-major ``[N, H, C]`` ones; one head per call takes those without a
    whole-tensor conversion copy, each head passing through ``[N, C]`` scratch, while stacked
    heads are copied once, see :func:`stacks`); ``[H, E]`` in CSR order."""
    if q.dtype in HALF_DTYPES:
        return attention_heads_first(q.float(), k.float(), graph, scale).to(q.dtype)
    scale = q.size(-1) ** -0.5 if scale is None else scale
    stack, groups = stacks(graph, q.size(0))
    attn = EdgeAttention.apply(stack, stack_heads(q, groups), stack_heads(k, groups), scale)
    return attn.view(q.size(0), graph.num_edges)


@torch.compiler.disable
def diffuse_heads_first(attn: Tensor, v: Tensor, graph: DiffusionGraph, hops: int, alpha: float,
                        kernel: str = "ppr", t: float = 1.0, hop_dropout: float = 0.0,
                        training: bool = False) -> Tensor:
    """:func:`diffuse` on head-major ``attn [H, E]`` (CSR order) and ``v [H, N, C]``;
    returns ``[H, N_dst, C]`` in the layout of ``v``: a view of a node-major ``[N, H, C]``
    tensor when ``v`` is one, so that transposing it back costs no copy."""
    s, coeffs = recursion_coefficients(hops, alpha, kernel, t)
    check_bipartite_diffusion(graph, hops, coeffs)
    if hops == 0:
        return v
    if v.dtype in HALF_DTYPES:
        return diffuse_heads_first(attn.float(), v.float(), graph, hops, alpha, kernel, t,
                                   hop_dropout, training).to(v.dtype)
    heads, node_major = v.size(0), is_node_major(v)
    stack, groups = stacks(graph, heads)
    masks = None
    if training and hop_dropout > 0.0:
        shape = (groups, stack.num_dst, v.size(2))
        masks = [torch.empty(shape, dtype=torch.bool, device=v.device).bernoulli_(
            1.0 - hop_dropout) for _ in range(hops)]
    out = Diffusion.apply(stack, stack_heads(attn, groups).contiguous(),
                          stack_heads(v, groups), s, coeffs, masks, 1.0 - hop_dropout)
    if groups == heads:  # one head per call: the kernel wrote the caller's layout
        return heads_view(out, node_major)
    out = out.view(heads, -1, v.size(2))
    return heads_view(out.transpose(0, 1).contiguous(), True) if node_major else out


def edge_softmax_attention(q: Tensor, k: Tensor, edge_index: Any,
                           num_nodes: Union[int, Tuple[int, int], None] = None,
                           scale: Optional[float] = None) -> Tensor:
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

    Returns:
        ``[E, H]`` attention in the input edge order (possibly a non-contiguous view); each
        target's incoming weights sum to one; targets without edges have none.
    """
    _check_features("q", q)
    _check_features("k", k)
    if q.shape[1:] != k.shape[1:] or q.dtype != k.dtype:
        raise ValueError(f"'q' and 'k' must agree in heads, channels and dtype "
                         f"(got {list(q.shape)} {q.dtype} and {list(k.shape)} {k.dtype})")
    if isinstance(scale, Tensor) and scale.dim() == 0 and not scale.requires_grad:
        scale = scale.item()  # a constant held in a tensor
    if scale is not None:
        if not is_real(scale):  # the kernels take a constant: no tensor with a gradient
            raise TypeError(f"'scale' must be a float, a 0-dim tensor without gradient or None "
                            f"(got {type(scale).__name__})")
        if not math.isfinite(scale):  # an infinite scale gives inf - inf = NaN scores
            raise ValueError(f"'scale' must be finite (got {scale!r})")
        scale = float(scale)
    graph = as_graph(edge_index, _num_nodes(num_nodes, (k.size(0), q.size(0))))
    attn = attention_heads_first(q.transpose(0, 1), k.transpose(0, 1), graph, scale)
    return graph.to_input_order(attn.t())


def diffuse(attn: Tensor, v: Tensor, edge_index: Any, hops: int = 5, alpha: float = 0.1,
            kernel: str = "ppr", t: float = 1.0, *, hop_dropout: float = 0.0,
            training: bool = False) -> Tensor:
    r"""Multi-hop diffusion of one-hop attention ``A`` over values ``V``.

    .. math::
        \text{ppr:}\quad Z^{(0)} = V,\quad Z^{(k+1)} = (1 - \alpha) A Z^{(k)} + \alpha V,
        \quad \text{out} = Z^{(K)}

        \text{heat:}\quad \text{out} = \sum_{k=0}^{K} \theta_k A^k V,\quad
        \theta_k \propto e^{-t} t^k / k!,\ \textstyle\sum_k \theta_k = 1

    Args:
        attn (torch.Tensor): One-hop attention ``[E, H]`` in the input edge order.
        v (torch.Tensor): Values ``[N, H, C]``.
        edge_index: The adjacency (any type :func:`~graphdiff.nn.graph.as_graph` accepts).
        hops (int, optional): Number of hops :math:`K \ge 0`. (default: :obj:`5`)
        alpha (float, optional): Teleport probability in :math:`[0, 1]`. (default: :obj:`0.1`)
        kernel (str, optional): ``"ppr"`` or ``"heat"``. (default: :obj:`"ppr"`)
        t (float, optional): Heat kernel time :math:`t \ge 0`. (default: :obj:`1.0`)
        hop_dropout (float, optional): Dropout probability applied to the features produced
            by every hop (a fresh mask per hop), in training only. (default: :obj:`0.0`)
        training (bool, optional): Whether ``hop_dropout`` is active. (default: :obj:`False`)

    Returns:
        ``[N, H, C]``. Memory: ``O(E H + K N H C)``; each hop is one sparse-dense product.
    """
    check_diffusion_args(hops, alpha, kernel, t, hop_dropout)
    _check_features("v", v)
    if not isinstance(attn, Tensor) or attn.dim() != 2 or attn.size(1) != v.size(1):
        raise ValueError(f"'attn' must have shape [num_edges, {v.size(1)}] "
                         f"(got {list(attn.shape) if isinstance(attn, Tensor) else attn!r})")
    if attn.dtype != v.dtype:
        raise TypeError(f"'attn' and 'v' must share a dtype (got {attn.dtype}, {v.dtype})")
    graph = as_graph(edge_index, (v.size(0), v.size(0)))
    if attn.size(0) != graph.num_edges:
        raise ValueError(f"'attn' has {attn.size(0)} rows but the graph has "
                         f"{graph.num_edges} edges")
    out = diffuse_heads_first(graph.to_csr_order(attn).t(), v.transpose(0, 1), graph, hops,
                              alpha, kernel, t, hop_dropout, training)
    return out.transpose(0, 1)


__all__: Sequence[str] = ["edge_softmax_attention", "diffuse", "recursion_coefficients",
                          "check_diffusion_args", "check_bipartite_diffusion"]
