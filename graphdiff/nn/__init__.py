"""Attention diffusion: the :class:`AttentionDiffusion` layer, the functions it runs
(:mod:`graphdiff.nn.functional`), and the graph structure they share (:class:`DiffusionGraph`,
built by :func:`diffusion_graph`)."""

from graphdiff.nn import functional
from graphdiff.nn.conv import AttentionDiffusion
from graphdiff.nn.graph import DiffusionGraph, diffusion_graph

__all__ = ["AttentionDiffusion", "DiffusionGraph", "diffusion_graph", "functional"]
