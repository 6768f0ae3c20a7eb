"""The attention diffusion layer as a PyG ``MessagePassing`` module."""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.nn.inits import glorot, zeros
from torch_geometric.typing import PairTensor, SparseTensor, torch_sparse
from torch_geometric.utils import add_self_loops, is_torch_sparse_tensor, remove_self_loops, softmax
from torch_geometric.utils.sparse import set_sparse_value

from graphdiff.checks import check_edge_index, is_integer, is_real
from graphdiff.nn import _core
from graphdiff.nn.functional import (
    check_diffusion_args,
    diffuse_stacked,
    gat_attention_stacked,
    softmax_attention_stacked,
)
from graphdiff.nn.graph import DiffusionGraph, diffusion_graph

# The one-hop scores AttentionDiffusion offers: Diffuser's scaled dot product, GAT's additive.
ATTENTION_SCORES = ("dot", "gat")


def _with_self_loops(adj: Any, num_nodes: Tuple[int, int]) -> Any:
    """``adj`` with its self-loops replaced by one per node, in its own type: PyG's
    ``remove_self_loops`` then ``add_self_loops`` for an edge_index or ``EdgeIndex`` (the loops
    last), ``torch_sparse.set_diag`` for a ``SparseTensor``, and the same (loops valued one,
    coalesced, in the input's layout) for a ``torch.sparse`` adjacency."""
    if isinstance(adj, DiffusionGraph):
        raise ValueError(
            "add_self_loops=True cannot change a prebuilt DiffusionGraph: build the graph from "
            "an adjacency with self-loops (torch_geometric.utils.add_self_loops, or a pattern's "
            "self_loops=True) and leave add_self_loops=False"
        )
    if num_nodes[0] != num_nodes[1]:
        raise ValueError(
            f"add_self_loops=True needs as many targets as sources (got {num_nodes[0]} sources "
            f"and {num_nodes[1]} targets): a bipartite graph has no self-loops"
        )
    num = num_nodes[0]
    if isinstance(adj, SparseTensor):
        return torch_sparse.set_diag(adj)
    if not is_torch_sparse_tensor(adj):
        check_edge_index(adj, num_nodes)
        return add_self_loops(remove_self_loops(adj)[0], num_nodes=num)[0]
    if adj.dim() - adj.dense_dim() != 2:
        return adj  # a batch of adjacencies: diffusion_graph refuses it, with the reason
    # In the mode it was made in: torch cannot coalesce an inference tensor outside it.
    with torch.inference_mode(adj.is_inference()):
        coo = adj.to_sparse_coo().coalesce()
        index, value = coo.indices(), coo.values()
        keep = index[0] != index[1]
        loops = torch.arange(num, device=index.device).expand(2, num)
        out = torch.sparse_coo_tensor(
            torch.cat([index[:, keep], loops], dim=1),
            torch.cat([value[keep], value.new_ones((num, *value.shape[1:]))]),
            adj.shape,
            check_invariants=False,
        ).coalesce()
        if adj.layout == torch.sparse_csr:
            return out.to_sparse_csr()
        if adj.layout == torch.sparse_csc:
            return out.to_sparse_csc()
        return out


class AttentionDiffusion(MessagePassing):
    r"""Multi-hop attention diffusion from `"Diffuser: Efficient Transformers with Multi-hop
    Attention Diffusion for Long Sequences" <https://arxiv.org/abs/2210.11794>`_.

    One-hop attention on the edges :math:`j \rightarrow i` of the graph (per head),
    :math:`A_{ij} = \mathrm{softmax}_{j \in \mathcal{N}(i)}(e_{ij})`, with the scaled dot
    product score of Diffuser (``attention="dot"``)

    .. math::
        e_{ij} = \frac{(\mathbf{W}_Q \mathbf{x}_i)^{\top} \mathbf{W}_K \mathbf{x}_j}{\sqrt{C}}

    or the additive score of GAT and `MAGNA <https://arxiv.org/abs/2009.14332>`_
    (``attention="gat"``, :class:`~torch_geometric.nn.conv.GATConv`'s)

    .. math::
        e_{ij} = \mathrm{LeakyReLU}\left(\mathbf{a}_s^{\top} \mathbf{W}_V \mathbf{x}_j +
        \mathbf{a}_t^{\top} \mathbf{W}_T \mathbf{x}_i\right),

    where :math:`\mathbf{W}_T = \mathbf{W}_V` (GATConv's one :math:`\mathbf{W}`) unless the
    input sizes come as a pair, where :math:`\mathbf{W}_T` is ``lin_query`` (GATConv's
    ``lin_dst``),

    is diffused over :math:`K` hops with personalised PageRank (``kernel="ppr"``),

    .. math::
        \mathbf{Z}^{(0)} = \mathbf{V} = \mathbf{X}\mathbf{W}_V, \qquad
        \mathbf{Z}^{(k+1)} = (1 - \alpha) \mathbf{A} \mathbf{Z}^{(k)} + \alpha \mathbf{V},
        \qquad \mathbf{X}' = \mathbf{Z}^{(K)},

    or with the heat kernel (``kernel="heat"``),
    :math:`\mathbf{X}' = \sum_{k=0}^{K} \theta_k \mathbf{A}^k \mathbf{V}` with
    :math:`\theta_k \propto e^{-t} t^k / k!` normalised to sum to one.

    With ``attention="gat"`` the layer holds GATConv's weights, under these names: the values'
    projection ``lin_value`` is GATConv's ``lin`` (``lin_src`` for a pair of input sizes, whose
    ``lin_dst`` is ``lin_query``; no ``lin_key``), and ``att_src``, ``att_dst`` and ``bias``
    are GATConv's (the bias is added to the output; the projections have none). With
    ``hops=1, alpha=0`` it computes GATConv's output: with ``add_self_loops=True`` that of
    GATConv's defaults, without it that of ``GATConv(add_self_loops=False)``.

    The default (fused) path is :func:`~graphdiff.nn.functional.edge_softmax_attention` (or
    :func:`~graphdiff.nn.functional.edge_gat_attention` on the per-node scores
    :math:`\mathbf{a}_s^{\top} \mathbf{W}_V \mathbf{x}_j` and
    :math:`\mathbf{a}_t^{\top} \mathbf{W}_T \mathbf{x}_i`) then
    :func:`~graphdiff.nn.functional.diffuse`: every hop is one sparse-dense product on the
    graph's CSR structure (:class:`~graphdiff.nn.DiffusionGraph`; pass one to skip building
    it), and no per-edge features ``[E, H, C]`` are materialised, forward or backward. With
    ``fused=False``, or whenever PyG's explain machinery or message (pre-)hooks are attached,
    the scores are gathered edge by edge and normalised by PyG's
    :func:`~torch_geometric.utils.softmax`, and each hop is a plain :meth:`propagate` whose
    :meth:`message` receives the attention as ``alpha``: the reference path, identical in
    value. PyG's explainers count one hop per ``MessagePassing`` module, so their node-level
    masks keep only the edges within one hop per layer of the explained node, although this
    layer reads ``hops`` hops.

    Args:
        in_channels (int or tuple): Size of each input sample, or ``(source, target)`` sizes
            for bipartite graphs (queries from targets, keys and values from sources).
        out_channels (int): Size of each output sample per head.
        heads (int, optional): Number of attention heads. (default: :obj:`1`)
        hops (int, optional): Number of diffusion hops :math:`K \ge 0`; ``hops=0`` returns
            :math:`\mathbf{V}`. (default: :obj:`5`)
        alpha (float, optional): Teleport probability :math:`\alpha \in [0, 1]`.
            (default: :obj:`0.1`)
        kernel (str, optional): ``"ppr"`` or ``"heat"``. (default: :obj:`"ppr"`)
        t (float, optional): Heat kernel time. (default: :obj:`1.0`)
        concat (bool, optional): If :obj:`False`, heads are averaged instead of concatenated.
            (default: :obj:`True`)
        dropout (float, optional): Dropout probability of the one-hop attention
            :math:`\mathbf{A}` (one mask shared by all hops). (default: :obj:`0.0`)
        hop_dropout (float, optional): Dropout probability of the features produced by every
            hop (a fresh mask per hop, as MAGNA/Diffuser's feature dropout inside the PPR
            loop). (default: :obj:`0.0`)
        attention (str, optional): The score: ``"dot"`` (scaled dot product) or ``"gat"``
            (GAT's additive score). (default: :obj:`"dot"`)
        negative_slope (float, optional): LeakyReLU's slope of the ``"gat"`` score.
            (default: :obj:`0.2`)
        add_self_loops (bool, optional): If :obj:`True`, remove the graph's self-loops and
            add one per node, as :class:`~torch_geometric.nn.conv.GATConv` does by default,
            so that a node without incoming edges attends to itself instead of keeping only
            the teleport share of its value (nothing at ``hops=1, alpha=0``). Off by default
            because Diffuser's patterns (:mod:`graphdiff.patterns`) already hold a self-loop
            per node. It needs as many targets as sources, and cannot change a prebuilt
            :class:`~graphdiff.nn.DiffusionGraph` (build that from an adjacency with
            self-loops). The loops are added at every call, as GATConv does, so the
            structure is built anew each time: for a graph used many times, add them to the
            data once (:class:`~torch_geometric.transforms.AddSelfLoops`).
            (default: :obj:`False`)
        bias (bool, optional): If :obj:`False`, the layer learns no additive bias. With
            ``"dot"`` the biases are in the query, key and value projections: when every
            target has incoming edges (as with self-loops, which canonical patterns include
            and ``add_self_loops=True`` adds)
            and without attention dropout, every row of :math:`\mathbf{A}` sums to one and
            the value bias passes through the diffusion unchanged: it is the output bias. (A
            target without incoming edges gets :math:`\alpha` times it with PPR, and so,
            partly, do the targets it reaches.) With ``"gat"``, as in GATConv, the bias is
            added to the output. (default: :obj:`True`)
        fused (bool, optional): Use the fused sparse kernels; :obj:`False` selects the
            gather-scatter reference. (default: :obj:`True`)
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`; ``aggr`` and ``flow`` must keep
            their defaults (``"add"``, ``"source_to_target"``), which the kernels implement.

    Gradients are first-order: the backward passes are written with in-place kernels, so a
    second derivative raises an error.

    Shapes:
        - **input:**
          node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V_s}|, F_{s}), (|\mathcal{V_t}|, F_{t}))` if bipartite,
          edge indices :math:`(2, |\mathcal{E}|)` (or a sparse ``adj_t``)
        - **output:** node features :math:`(|\mathcal{V}_t|, H * C)` or
          :math:`(|\mathcal{V}_t|, C)` if :obj:`concat=False`; attention weights
          :math:`(|\mathcal{E}|, H)` if :obj:`return_attention_weights=True`
    """

    def __init__(
        self,
        in_channels: Union[int, Tuple[int, int]],
        out_channels: int,
        heads: int = 1,
        hops: int = 5,
        alpha: float = 0.1,
        kernel: str = "ppr",
        t: float = 1.0,
        concat: bool = True,
        dropout: float = 0.0,
        hop_dropout: float = 0.0,
        attention: str = "dot",
        negative_slope: float = 0.2,
        add_self_loops: bool = False,
        bias: bool = True,
        fused: bool = True,
        **kwargs: Any,
    ) -> None:
        # The fused kernels sum over incoming edges, softmax-normalised per target: another
        # aggregation or flow would only change the reference path, silently.
        for name, fixed in (("aggr", "add"), ("flow", "source_to_target")):
            if kwargs.setdefault(name, fixed) != fixed:
                raise ValueError(
                    f"AttentionDiffusion supports only {name}={fixed!r} (got {kwargs[name]!r})"
                )
        super().__init__(node_dim=0, **kwargs)
        check_diffusion_args(hops, alpha, kernel, t, hop_dropout)
        for name, value in (("heads", heads), ("out_channels", out_channels)):
            if not is_integer(value) or value < 1:
                raise ValueError(f"'{name}' must be a positive int (got {value!r})")
        pair = (in_channels,) * 2 if is_integer(in_channels) else in_channels
        if not (
            isinstance(pair, (tuple, list))
            and len(pair) == 2
            and all(is_integer(c) and (c >= 1 or c == -1) for c in pair)
        ):
            raise ValueError(
                f"'in_channels' must be a positive int, -1 (lazy), or a pair of "
                f"them (sources, targets) (got {in_channels!r})"
            )
        if not is_real(dropout) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"'dropout' must be a float in [0, 1) (got {dropout!r})")
        if attention not in ATTENTION_SCORES:
            raise ValueError(f"'attention' must be one of {ATTENTION_SCORES} (got {attention!r})")
        if not is_real(negative_slope) or not math.isfinite(negative_slope):
            raise ValueError(f"'negative_slope' must be a finite float (got {negative_slope!r})")
        if attention == "dot" and negative_slope != 0.2:
            raise ValueError(
                "'negative_slope' shapes the \"gat\" score only; attention='dot' has no "
                f"LeakyReLU (got negative_slope={negative_slope!r})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.hops = hops
        self.alpha = alpha
        self.kernel = kernel
        self.t = t
        self.concat = concat
        self.dropout = dropout
        self.hop_dropout = hop_dropout
        self.attention = attention
        self.negative_slope = negative_slope
        self.add_self_loops = add_self_loops
        self.fused = fused

        src_channels, dst_channels = pair
        width = heads * out_channels
        self.lin_query: Optional[Linear] = None
        self.lin_key: Optional[Linear] = None
        if attention == "dot":
            self.lin_query = Linear(dst_channels, width, bias=bias)
            self.lin_key = Linear(src_channels, width, bias=bias)
            self.lin_value = Linear(src_channels, width, bias=bias)
            self.register_parameter("att_src", None)
            self.register_parameter("att_dst", None)
            self.register_parameter("bias", None)
        else:  # GATConv's weights: W (one for both sides unless the sizes come in a pair)
            self.lin_value = Linear(src_channels, width, bias=False, weight_initializer="glorot")
            if not is_integer(in_channels):
                self.lin_query = Linear(
                    dst_channels, width, bias=False, weight_initializer="glorot"
                )
            self.att_src = Parameter(torch.empty(1, heads, out_channels))
            self.att_dst = Parameter(torch.empty(1, heads, out_channels))
            if bias:
                self.bias = Parameter(torch.empty(width if concat else out_channels))
            else:
                self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for lin in (self.lin_query, self.lin_key, self.lin_value):
            if lin is not None:
                lin.reset_parameters()
        glorot(self.att_src)
        glorot(self.att_dst)
        zeros(self.bias)

    def forward(
        self,
        x: Union[Tensor, PairTensor],
        edge_index: Any,
        return_attention_weights: Optional[bool] = None,
    ):
        r"""Runs the forward pass of the module.

        Args:
            x (torch.Tensor or (torch.Tensor, torch.Tensor)): The input node features.
            edge_index: ``[2, E]`` edge indices, a PyG ``EdgeIndex``, a ``torch.sparse``
                CSR/CSC/COO ``adj_t`` (rows = targets; a COO one is coalesced first), a
                ``torch_sparse.SparseTensor`` or a :class:`~graphdiff.nn.DiffusionGraph`.
            return_attention_weights (bool, optional): If set to :obj:`True`, also return
                ``(edge_index, attention)`` with the one-hop attention ``[E, H]`` in the
                order of the edges (for sparse inputs: the adjacency holding it as values,
                coalesced for COO; for a ``DiffusionGraph``: the order of the adjacency it
                was built from; with ``add_self_loops=True``: the adjacency with its
                self-loops, as GATConv returns it). (default: :obj:`None`)
        """
        if not isinstance(x, Tensor) and not (isinstance(x, (tuple, list)) and len(x) == 2):
            raise TypeError(
                f"'x' must be a Tensor or a pair (x_src, x_dst) of them (got {type(x).__name__})"
            )
        x_src, x_dst = (x, x) if isinstance(x, Tensor) else x
        H = self.heads
        for name, feat, size in (
            ("x", x_src, self.lin_value.in_channels),
            ("x (targets)", x_dst, self._lin_dst().in_channels),
        ):
            if not isinstance(feat, Tensor) or feat.dim() != 2:
                raise ValueError(f"'{name}' must be a [num_nodes, in_channels] Tensor")
            if not feat.is_floating_point():  # token ids belong in an embedding first
                raise TypeError(f"'{name}' must be floating point features (got {feat.dtype})")
            if size > 0 and feat.size(-1) != size:
                raise ValueError(
                    f"'{name}' has {feat.size(-1)} features but the layer "
                    f"expects in_channels={size}"
                )
        num_nodes = (x_src.size(0), x_dst.size(0))
        if self.add_self_loops:
            edge_index = _with_self_loops(edge_index, num_nodes)
        graph = diffusion_graph(edge_index, num_nodes)
        v = _core.split_heads(self.lin_value(x_src), H)
        if self.hops == 0 and not return_attention_weights:  # Z_0 = V: no attention needed
            _core.check_bipartite(graph, 0, ())
            return self._output(v)
        dtype = v.dtype  # the whole core in float32 for half precision, rounded once at the end
        v = _core.compute_dtype(v)
        fused = self._use_fused()
        attn = self._edge_attention(x_src, x_dst, v, graph, fused)
        attn_used = F.dropout(attn, p=self.dropout, training=self.training)
        if fused:
            out = diffuse_stacked(
                attn_used,
                v,
                graph,
                self.hops,
                self.alpha,
                self.kernel,
                self.t,
                self.hop_dropout,
                self.training,
            )
        else:
            out = self._diffuse_by_messages(attn_used, v, graph)
        out = self._output(out.to(dtype))
        if not return_attention_weights:
            return out
        if fused:
            attn = _core.edges_last(_core.unstack_edges(attn, graph, H), graph)
        weights = attn.to(dtype)
        return out, (self._with_values(edge_index, weights), weights)

    def _lin_dst(self) -> Linear:
        """The projection of the targets' features: the queries', or GATConv's ``W`` (the
        values' ``W`` itself unless the input sizes came as a pair)."""
        return self.lin_value if self.lin_query is None else self.lin_query

    def _edge_attention(
        self, x_src: Tensor, x_dst: Tensor, v: Tensor, graph: DiffusionGraph, fused: bool
    ) -> Tensor:
        """The one-hop attention in ``v``'s dtype: by the fused kernels, ``[H / G, E_stack]``
        in the storage order of the graph's stack of heads (see
        :func:`~graphdiff.nn.functional.diffuse_stacked`), or (reference) ``[E, H]`` in the
        input edge order, by gathering
        the scores edge by edge, ``[E, H, C]`` products for ``"dot"``, and PyG's segment
        softmax."""
        H, C = self.heads, self.out_channels
        # The targets' projection [N_dst, H, C]: queries, or GAT's W x_i (V itself when
        # sources and targets share W and features).
        if self.lin_query is None and x_dst is x_src:
            target = v
        else:
            target = _core.compute_dtype(_core.split_heads(self._lin_dst()(x_dst), H))
        if self.attention == "dot":
            k = _core.compute_dtype(_core.split_heads(self.lin_key(x_src), H))
            if fused:
                return softmax_attention_stacked(target, k, graph, C**-0.5)
            edge_index = graph.edge_index()
            scores = (target[edge_index[1]] * k[edge_index[0]]).sum(-1) * C**-0.5
        else:
            src_scores = (v * self.att_src).sum(-1)  # [N_src, H]
            dst_scores = (target * self.att_dst).sum(-1)  # [N_dst, H]
            if fused:
                return gat_attention_stacked(
                    src_scores, dst_scores, graph, float(self.negative_slope)
                )
            edge_index = graph.edge_index()
            scores = src_scores[edge_index[0]] + dst_scores[edge_index[1]]
            scores = F.leaky_relu(scores, self.negative_slope)
        return softmax(scores, edge_index[1], num_nodes=graph.num_dst)

    def _output(self, out: Tensor) -> Tensor:
        """``[N, H, C]`` -> the layer's output: heads concatenated or averaged, plus the
        output bias (GATConv's, ``"gat"`` only)."""
        out = _core.merge_heads(out, self.concat)
        return out if self.bias is None else out + self.bias

    def _use_fused(self) -> bool:
        # Explainers and message hooks must see every hop's message: take the reference path.
        return (
            self.fused
            and not self.explain
            and not self._message_forward_hooks
            and not self._message_forward_pre_hooks
        )

    def _diffuse_by_messages(self, attn: Tensor, v: Tensor, graph: DiffusionGraph) -> Tensor:
        """The reference: one ``propagate`` per hop on ``[N, H, C]`` features, with the
        attention ``attn [E, H]`` handed to :meth:`message` as ``alpha``, as PyG's
        ``AttentionExplainer`` expects."""
        s, coeffs = _core.recursion_coefficients(self.hops, self.alpha, self.kernel, self.t)
        _core.check_bipartite(graph, self.hops, coeffs)
        edge_index, size = graph.edge_index(), (graph.num_src, graph.num_dst)
        z = v * coeffs[0]
        for m in range(self.hops):
            z = s * self.propagate(edge_index, x=z, alpha=attn, size=size)
            if coeffs[m + 1] != 0.0:
                z = z + coeffs[m + 1] * v
            z = F.dropout(z, p=self.hop_dropout, training=self.training)
        return z

    def message(self, x_j: Tensor, alpha: Tensor) -> Tensor:
        """``alpha [E, H] * x_j [E, H, C]``: ``alpha`` is the one-hop attention, under the
        name PyG's ``AttentionExplainer`` reads it by."""
        return alpha.unsqueeze(-1) * x_j

    @staticmethod
    def _with_values(edge_index: Any, weights: Tensor) -> Any:
        if isinstance(edge_index, SparseTensor):
            return edge_index.set_value(weights, layout="coo")
        if is_torch_sparse_tensor(edge_index):
            if edge_index.layout == torch.sparse_coo:  # weights follow the coalesced order,
                edge_index = edge_index.coalesce()  # as the graph does
            return set_sparse_value(edge_index, weights)
        return edge_index

    def __repr__(self) -> str:
        extra = f", t={self.t}" if self.kernel == "heat" else ""
        if self.attention == "gat":
            extra += ", attention='gat'"
        if self.negative_slope != 0.2:
            extra += f", negative_slope={self.negative_slope}"
        if self.add_self_loops:
            extra += ", add_self_loops=True"
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"heads={self.heads}, hops={self.hops}, alpha={self.alpha}, "
            f"kernel='{self.kernel}'{extra})"
        )
