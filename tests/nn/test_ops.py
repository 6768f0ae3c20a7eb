"""The fused kernels as custom operators: torch.library.opcheck of each (schema, fake kernel
against the real one, autograd registration, and AOTAutograd with dynamic shapes against eager,
gradients included)."""

import pytest
import torch

from graphdiff.nn import _autograd, diffusion_graph
from graphdiff.nn import graph as graph_module
from graphdiff.nn._core import recursion_coefficients, stack_edges
from graphdiff.patterns import BlockWindow, Global, Random

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


def banded_graph(n, pattern):
    """The graph of a pattern whose block window (blocks of 3 tokens) is a band."""
    names = ("MIN_BAND_BLOCK", "MIN_DENSE_EDGES", "MIN_UNSTACKED_BAND_EDGES")
    limits = [getattr(graph_module, name) for name in names]
    for name, value in zip(names, (3, 0, 0)):
        setattr(graph_module, name, value)
    try:
        graph = diffusion_graph(pattern(n), (n, n))
    finally:
        for name, value in zip(names, limits):
            setattr(graph_module, name, value)
    assert graph.band == 3
    return graph


def band_cases():
    # A band over a length off its blocks (one head per call), and the stack of both heads of
    # a graph with a band and global tokens (one call, each dense part of the heads together,
    # the attention with the band padding 0, as the kernels leave it).
    s, coeffs = recursion_coefficients(HOPS, 0.1)
    single = banded_graph(3 * N + 4, BlockWindow(6) | Random(2))
    source = banded_graph(3 * N, BlockWindow(6) | Global(2) | Random(2))
    stack = source.stacked(H)
    assert stack.copies == H and stack.num_global == 2
    stacked_attn = stack_edges(torch.rand(H, source.num_edges, dtype=torch.float64), source)
    for name, graph, heads, attn in (
        ("band", single, H, torch.rand(H, single.num_edges, dtype=torch.float64)),
        ("stacked band", stack, 1, stacked_attn),
    ):
        structure, n = graph.structure(), graph.num_dst
        yield f"edge_attention {name}", (*structure, randn(heads, n, C), randn(heads, n, C), 0.5)
        yield f"gat_attention {name}", (*structure, randn(heads, n), randn(heads, n), 0.2)
        yield (
            f"diffusion {name}",
            (
                *structure,
                attn.requires_grad_(),
                randn(heads, n, C),
                s,
                list(coeffs),
                None,
                1.0,
                True,
            ),
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
