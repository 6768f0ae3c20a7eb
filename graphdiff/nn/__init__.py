"""Attention diffusion: the :class:`AttentionDiffusion` layer, the functions it runs
(:mod:`graphdiff.nn.functional`), the graph structure they share (:class:`DiffusionGraph`,
built by :func:`diffusion_graph`), and :class:`DiffusionBlock`, the layer in a pre-LayerNorm
transformer block."""

from graphdiff.nn import functional
from graphdiff.nn.block import DiffusionBlock
from graphdiff.nn.conv import AttentionDiffusion
from graphdiff.nn.graph import DiffusionGraph, diffusion_graph

__all__ = [
    "AttentionDiffusion",
    "DiffusionBlock",
    "DiffusionGraph",
    "diffusion_graph",
    "functional",
]
