"""The fused kernels as custom operators: torch.library.opcheck of each (schema, fake kernel
against the real one, autograd registration, and AOTAutograd with dynamic shapes against eager,
gradients included)."""

import pytest
import torch

from graphdiff.nn import _autograd, diffusion_graph
from graphdiff.nn import graph as graph_module
from graphdiff.nn._core import recursion_coefficients
from graphdiff.patterns import BlockWindow, Random

from .reference import random_graph

N, H, C, HOPS = 9, 2, 3, 3


@pytest.fixture(autouse=True)
def head_calls():
    """The operators take one graph's tensors as they are: the stacked and per-head runs of
    the other kernel tests would check the same thing twice."""


def graph_tensors(num_src=N, num_dst=N):
    ei = random_graph(max(num_src, num_dst), 30, seed=3, self_loops=False)
    ei = ei[:, (ei[0] < num_src) & (ei[1] < num_dst)]
    return diffusion_graph(ei, (num_src, num_dst)).structure()


def randn(*shape, grad=True, node_major=False):
    """float64 ``[H, N, ...]``, or with ``node_major`` the head-major view of an ``[N, H, ...]``
    tensor (PyG's layout, which the kernels take without copies)."""
    if node_major:
        x = torch.randn(shape[1], shape[0], *shape[2:], dtype=torch.float64).transpose(0, 1)
    else:
        x = torch.randn(*shape, dtype=torch.float64)
    return x.requires_grad_(grad)


def banded_structure(n=3 * N + 4):
    """A graph whose block window (blocks of 3 tokens) is a band, with random edges besides."""
    limits = graph_module.MIN_BAND_BLOCK, graph_module.MIN_DENSE_EDGES
    graph_module.MIN_BAND_BLOCK, graph_module.MIN_DENSE_EDGES = 3, 0
    try:
        graph = diffusion_graph((BlockWindow(6) | Random(2))(n), (n, n))
    finally:
        graph_module.MIN_BAND_BLOCK, graph_module.MIN_DENSE_EDGES = limits
    assert graph.band == 3
    return graph.structure(), n, graph.num_edges


def band_cases():
    structure, n, edges = banded_structure()
    s, coeffs = recursion_coefficients(HOPS, 0.1)
    attn = torch.rand(H, edges, dtype=torch.float64)
    yield "edge_attention band", (*structure, randn(H, n, C), randn(H, n, C), 0.5)
    yield "gat_attention band", (*structure, randn(H, n), randn(H, n), 0.2)
    yield (
        "diffusion band",
        (*structure, attn.requires_grad_(), randn(H, n, C), s, list(coeffs), None, 1.0, True),
    )


def op_cases():
    torch.manual_seed(0)
    yield from band_cases()
    structure = graph_tensors()
    bipartite = graph_tensors(num_src=7, num_dst=N)
    edges = structure[1].numel()
    s, coeffs = recursion_coefficients(HOPS, 0.1)
    masks = torch.rand(HOPS, H, N, C) > 0.3
    attn = torch.rand(H, edges, dtype=torch.float64)
    yield "edge_attention", (*structure, randn(H, N, C), randn(H, N, C, node_major=True), 0.5)
    yield "edge_attention bipartite", (*bipartite, randn(H, N, C), randn(H, 7, C), 0.5)
    yield "gat_attention", (*structure, randn(H, N), randn(H, N), 0.2)
    yield (
        "diffusion",
        (*structure, attn.requires_grad_(), randn(H, N, C), s, list(coeffs), None, 1.0, True),
    )
    yield (
        "diffusion node-major, hop dropout",
        (*structure, attn, randn(H, N, C, node_major=True), s, list(coeffs), masks, 0.7, True),
    )
    yield (
        "diffusion without history",
        (*structure, attn.detach(), randn(H, N, C), s, list(coeffs), None, 1.0, False),
    )
    grad_attn = randn(H, edges, grad=False)
    yield (
        "edge_attention_backward",
        (*structure, randn(H, N, C, grad=False), randn(H, N, C, grad=False), attn.detach())
        + (grad_attn, 0.5, True, False),
    )
    yield (
        "gat_attention_backward",
        (*structure, randn(H, N, grad=False), randn(H, N, grad=False), attn.detach())
        + (grad_attn, 0.2, False, True),
    )
    history = randn(H, N, HOPS, C, grad=False)
    yield (
        "diffusion_backward",
        # The result's gradient in its layout: node-major [N, H, C].
        (*structure, attn.detach(), history, randn(N, H, C, grad=False))
        + (s, list(coeffs), masks, 0.7, True, True),
    )


CASES = dict(op_cases())


@pytest.mark.parametrize("case", list(CASES))
def test_opcheck(case):
    op = getattr(_autograd, case.split()[0])
    results = torch.library.opcheck(op, CASES[case])
    assert set(results.values()) == {"SUCCESS"}, results
