"""Sequences as PyG graphs and batches: one graph per sequence, its edges an attention pattern."""

from graphdiff.data.graphs import AddPattern, graph_batch, sequence_graph, to_padded

__all__ = ["sequence_graph", "AddPattern", "graph_batch", "to_padded"]
