"""Graphs for the layer: sequences as PyG graphs and batches (one graph per sequence, its edges
an attention pattern), and Exphormer's expander edges and virtual nodes for any graph."""

from graphdiff.data.expander import AddExpander
from graphdiff.data.graphs import AddPattern, graph_batch, sequence_graph, to_padded

__all__ = ["sequence_graph", "AddPattern", "graph_batch", "to_padded", "AddExpander"]
