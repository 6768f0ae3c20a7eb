"""Attention diffusion layers: :class:`AttentionDiffusion` and its fused functional core."""
from graphdiff.nn import functional
from graphdiff.nn.conv import AttentionDiffusion
from graphdiff.nn.graph import DiffusionGraph, as_graph

__all__ = ["AttentionDiffusion", "DiffusionGraph", "as_graph", "functional"]
