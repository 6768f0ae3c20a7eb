"""A pre-LayerNorm transformer block around :class:`~graphdiff.nn.AttentionDiffusion`."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Dropout, LayerNorm, Linear, Sequential
from torch_geometric.nn.resolver import activation_resolver

from graphdiff.checks import is_integer, is_real
from graphdiff.nn.conv import AttentionDiffusion

# AttentionDiffusion's arguments that the block derives from its own (heads and dropout are
# the block's arguments themselves, so they cannot arrive among the others).
BLOCK_DERIVED_ARGS = frozenset({"in_channels", "out_channels", "concat"})


class DiffusionBlock(torch.nn.Module):
    r"""Attention diffusion and a feed-forward network, each in a pre-LayerNorm residual
    branch: the layer of `"Multi-hop Attention Graph Neural Networks"
    <https://arxiv.org/abs/2009.14332>`_ (MAGNA; Diffuser's layer is the same with the
    LayerNorm after each residual instead),

    .. math::
        \mathbf{X}' = \mathbf{X} + \mathrm{Dropout}\left(\mathbf{W}_O\,
        \mathrm{AttentionDiffusion}(\mathrm{LN}_1(\mathbf{X})) + \mathbf{b}_O\right)

        \mathbf{X}'' = \mathbf{X}' + \mathrm{Dropout}\left(\mathrm{FFN}(\mathrm{LN}_2
        (\mathbf{X}'))\right), \qquad
        \mathrm{FFN}(\mathbf{x}) = \mathbf{W}_2\,\mathrm{Dropout}(\sigma(\mathbf{W}_1
        \mathbf{x} + \mathbf{b}_1)) + \mathbf{b}_2,

    where :class:`~graphdiff.nn.AttentionDiffusion` (``diffusion``) has ``heads`` heads of
    ``channels // heads`` channels, concatenated, and :math:`\mathbf{W}_O` (``lin_out``) mixes
    them, as MAGNA's and Diffuser's output projection does. Features keep their size, so
    blocks stack, and the block is a local conv of
    :class:`~torch_geometric.nn.conv.GPSConv` (which adds its own residual and
    normalisation around it).

    Args:
        channels (int): Size :math:`C` of each node's features, in and out.
        heads (int, optional): Number of attention heads; must divide ``channels``.
            (default: :obj:`1`)
        hops (int, optional): Number of diffusion hops :math:`K`. (default: :obj:`5`)
        alpha (float, optional): Teleport probability. (default: :obj:`0.1`)
        attention (str, optional): The one-hop score, ``"dot"`` or ``"gat"`` (see
            :class:`~graphdiff.nn.AttentionDiffusion`). (default: :obj:`"dot"`)
        ffn_channels (int, optional): Hidden size of the feed-forward network.
            (default: :obj:`4 * channels`, MAGNA's and the transformer's)
        dropout (float, optional): Dropout probability of both residual branches and of the
            feed-forward network's hidden features. (default: :obj:`0.0`)
        attention_dropout (float, optional): Dropout probability of the one-hop attention
            (``dropout`` of :class:`~graphdiff.nn.AttentionDiffusion`). (default: :obj:`0.0`)
        act (str or Callable, optional): The feed-forward activation :math:`\sigma`, by
            name as :obj:`torch_geometric.nn.resolver.activation_resolver` takes it.
            (default: :obj:`"relu"`, MAGNA's)
        act_kwargs (Dict[str, Any], optional): Arguments of the activation.
            (default: :obj:`None`)
        **kwargs (optional): Further arguments of :class:`~graphdiff.nn.AttentionDiffusion`
            (``kernel``, ``t``, ``hop_dropout``, ``negative_slope``, ``add_self_loops``,
            ``bias``, ``fused``); not those the block sets itself (``in_channels``,
            ``out_channels``, ``concat``), which are an error.

    Shapes:
        - **input:**
          node features :math:`(|\mathcal{V}|, C)`,
          edge indices :math:`(2, |\mathcal{E}|)` or any adjacency
          :class:`~graphdiff.nn.AttentionDiffusion` takes
        - **output:** node features :math:`(|\mathcal{V}|, C)`
    """

    def __init__(
        self,
        channels: int,
        heads: int = 1,
        hops: int = 5,
        alpha: float = 0.1,
        attention: str = "dot",
        ffn_channels: Optional[int] = None,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        act: Union[str, Callable] = "relu",
        act_kwargs: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        for name, value in (("channels", channels), ("heads", heads)):
            if not is_integer(value) or value < 1:
                raise ValueError(f"'{name}' must be a positive int (got {value!r})")
        if channels % heads != 0:
            raise ValueError(
                f"'channels' ({channels}) must split into 'heads' ({heads}) heads of equal "
                f"size: choose heads that divide channels"
            )
        ffn_channels = 4 * channels if ffn_channels is None else ffn_channels
        if not is_integer(ffn_channels) or ffn_channels < 1:
            raise ValueError(f"'ffn_channels' must be a positive int (got {ffn_channels!r})")
        for name, value in (("dropout", dropout), ("attention_dropout", attention_dropout)):
            if not is_real(value) or not 0.0 <= value < 1.0:
                raise ValueError(f"'{name}' must be a float in [0, 1) (got {value!r})")
        fixed = sorted(BLOCK_DERIVED_ARGS.intersection(kwargs))
        if fixed:
            raise ValueError(
                f"DiffusionBlock sets AttentionDiffusion's {', '.join(fixed)} itself (in and "
                f"out channels from 'channels' and 'heads', heads concatenated): remove "
                f"{', '.join(repr(name) for name in fixed)}"
            )
        self.channels = channels
        self.heads = heads
        self.ffn_channels = ffn_channels
        self.dropout = dropout

        self.attention_norm = LayerNorm(channels)
        self.diffusion = AttentionDiffusion(
            channels,
            channels // heads,
            heads=heads,
            hops=hops,
            alpha=alpha,
            attention=attention,
            dropout=attention_dropout,
            **kwargs,
        )
        self.lin_out = Linear(channels, channels)
        self.ffn_norm = LayerNorm(channels)
        self.ffn = Sequential(
            Linear(channels, ffn_channels),
            activation_resolver(act, **(act_kwargs or {})),
            Dropout(dropout),
            Linear(ffn_channels, channels),
        )

    def reset_parameters(self) -> None:
        self.attention_norm.reset_parameters()
        self.diffusion.reset_parameters()
        self.lin_out.reset_parameters()
        self.ffn_norm.reset_parameters()
        for module in self.ffn:
            if isinstance(module, Linear):
                module.reset_parameters()

    def forward(self, x: Tensor, edge_index: Any, edge_attr: Optional[Tensor] = None) -> Tensor:
        r"""Runs the forward pass of the module.

        Args:
            x (torch.Tensor): The node features ``[N, channels]``.
            edge_index: Any adjacency :class:`~graphdiff.nn.AttentionDiffusion` takes (an
                ``edge_index``, ``EdgeIndex``, ``torch.sparse`` or ``SparseTensor`` ``adj_t``,
                or a :class:`~graphdiff.nn.DiffusionGraph`).
            edge_attr (torch.Tensor, optional): Only :obj:`None`: the attention does not read
                edge features, and :class:`~torch_geometric.nn.conv.GPSConv` hands its local
                conv whatever keyword arguments it gets, so a tensor here is an error rather
                than ignored. (default: :obj:`None`)
        """
        if not isinstance(x, Tensor) or x.dim() != 2 or x.size(-1) != self.channels:
            shape = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"'x' must be a [num_nodes, {self.channels}] Tensor (got {shape})")
        if edge_attr is not None:
            raise ValueError(
                "DiffusionBlock does not use edge features, got 'edge_attr': encode them into "
                "the node features or leave them out of the call (GPSConv passes its keyword "
                "arguments on to the local conv)"
            )
        h = self.lin_out(self.diffusion(self.attention_norm(x), edge_index))
        x = x + F.dropout(h, p=self.dropout, training=self.training)
        h = self.ffn(self.ffn_norm(x))
        return x + F.dropout(h, p=self.dropout, training=self.training)

    def __repr__(self) -> str:
        diffusion = self.diffusion
        extra = f", t={diffusion.t}" if diffusion.kernel == "heat" else ""
        if diffusion.dropout:
            extra += f", attention_dropout={diffusion.dropout}"
        if diffusion.add_self_loops:
            extra += ", add_self_loops=True"
        return (
            f"{self.__class__.__name__}({self.channels}, heads={self.heads}, "
            f"hops={diffusion.hops}, alpha={diffusion.alpha}, kernel='{diffusion.kernel}'"
            f"{extra}, attention='{diffusion.attention}', ffn_channels={self.ffn_channels}, "
            f"dropout={self.dropout})"
        )
