"""What AddExpander adds, measured by analysis: a long path's spectral gap goes from about
1/n^2 to a constant, and the expander part is near-Ramanujan; networkx as the reference."""

import math

import networkx as nx
import numpy as np
import pytest
import torch
from torch_geometric.data import Data

import analysis
from graphdiff.data import AddExpander

N = 200


def path_graph(n):
    forward = torch.stack([torch.arange(n - 1), torch.arange(1, n)])
    return Data(edge_index=torch.cat([forward, forward.flip(0)], dim=1), num_nodes=n)


def networkx_graph(edge_index, n):
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from(edge_index.t().tolist())
    return graph


def networkx_gap(edge_index, n):
    return float(np.sort(nx.normalized_laplacian_spectrum(networkx_graph(edge_index, n)))[1])


def test_the_path_gap_is_about_one_over_n_squared():
    gap = analysis.spectral_gap(path_graph(N).edge_index, N)
    # Normalised Laplacian of the path P_n: eigenvalues 1 - cos(pi k / (n - 1)).
    assert gap == pytest.approx(1 - math.cos(math.pi / (N - 1)), rel=1e-6)
    assert gap * (N - 1) ** 2 == pytest.approx(math.pi**2 / 2, rel=1e-3)


@pytest.mark.parametrize("degree, virtual_nodes", [(3, 0), (3, 1), (5, 0)])
def test_the_expander_lifts_the_gap_to_a_constant(degree, virtual_nodes):
    out = AddExpander(degree, virtual_nodes=virtual_nodes, seed=0)(path_graph(N))
    n = out.num_nodes
    gap = analysis.spectral_gap(out.edge_index, n)
    assert gap == pytest.approx(networkx_gap(out.edge_index, n), abs=1e-9)
    # Measured over seeds 0-9 (d = 2, 3, 5): 0.256-0.293, 0.333-0.375, 0.457-0.475; with a
    # virtual node 0.409-0.445 for d = 3. The path alone: 1.2e-4.
    assert gap > 0.1 and gap > 1000 * (1 - math.cos(math.pi / (N - 1)))

    # The expander alone: near the Ramanujan bound (measured ratios 0.95-1.02 over seeds 0-9).
    expander = out.edge_index[:, out.edge_type == AddExpander.EXPANDER_EDGE]
    measured = analysis.adjacency_lambda(expander, N)
    graph = networkx_graph(expander, N)
    spectrum = np.linalg.eigvalsh(nx.to_numpy_array(graph))
    mean_degree = 2 * graph.number_of_edges() / N
    assert 2 * degree - 1 < mean_degree <= 2 * degree
    reference = max(abs(spectrum[-2]), abs(spectrum[0])) / (2 * math.sqrt(mean_degree - 1))
    assert measured.ramanujan_ratio == pytest.approx(reference, rel=1e-9)
    assert 0.9 < measured.ramanujan_ratio < 1.1
    # Its own gap passes Exphormer's test without a redraw (none was asked for).
    assert analysis.spectral_gap(expander, N) >= AddExpander(degree, tolerance=0.1).min_gap
