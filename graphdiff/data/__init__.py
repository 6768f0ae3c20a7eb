"""Sequences as PyG graphs and batches (DESIGN 4.2), and the task datasets."""
from graphdiff.data.graphs import AddPattern, graph_batch, sequence_graph, to_padded

__all__ = ["sequence_graph", "AddPattern", "graph_batch", "to_padded"]
