"""Graphs with a block band: its edges run as dense [w, 3w] blocks, and every kernel must
give what the dense references give, whatever order the edges came in."""

import pytest
import torch

from graphdiff.nn import diffusion_graph
from graphdiff.nn import graph as graph_module
from graphdiff.nn.functional import diffuse, edge_gat_attention, edge_softmax_attention
from graphdiff.patterns import BlockWindow, Global, Random, Window, diffuser

from .reference import dense_attention, dense_diffuse, dense_gat_attention, edge_values

N, H, C, W = 44, 3, 4, 4  # blocks of 4 tokens: 11 blocks, blocks 1 .. 9 in the band


@pytest.fixture(autouse=True)
def head_calls():
    """A graph with a band runs head by head: no stacked variant to check."""


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(graph_module, "MIN_BAND_BLOCK", W)


def banded_graph(shuffle=False, seed=0):
    """The official block window (blocks of W tokens), two global tokens and three random
    keys per query: a band of W with other edges in and around it."""
    ei = (BlockWindow(2 * W) | Global(2) | Random(3, seed=seed))(N)
    if shuffle:
        ei = ei[:, torch.randperm(ei.size(1), generator=torch.Generator().manual_seed(seed))]
    return ei


def features(seed, heads=H, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(N, heads, C, generator=gen, dtype=dtype).requires_grad_() for _ in range(3)]


@pytest.mark.parametrize(
    "pattern, n, band",
    [
        (diffuser(window=64, num_global=8, num_random=8), 1024, 32),
        (BlockWindow(64), 160, 32),  # B = 3
        (Window(64) | Global(8), 1024, 16),  # a sliding window of 65 holds blocks of 16
        (Window(16) | Global(1), 512, 0),  # runs of 17: blocks of at most 4 fit
        (Random(8) | Global(1), 512, 0),
    ],
)
def test_band_is_found_where_every_edge_of_it_is_there(pattern, n, band, monkeypatch):
    monkeypatch.setattr(graph_module, "MIN_BAND_BLOCK", 16)
    graph = diffusion_graph(pattern(n), (n, n))
    assert graph.band == band
    assert graph.num_edges == pattern(n).size(1)
    if band:
        assert graph.band_blocks == n // band - 2
        assert graph.col.numel() == graph.num_edges - graph.band_edges


def test_a_missing_or_duplicate_band_edge_means_no_band():
    ei = banded_graph()
    full = diffusion_graph(ei, (N, N))
    assert full.band == W
    inside = ((ei[1] == 2 * W) & (ei[0] == 2 * W + 1)).nonzero().item()  # in block 2's band
    missing = torch.cat([ei[:, :inside], ei[:, inside + 1 :]], dim=1)
    assert diffusion_graph(missing, (N, N)).band == 0
    duplicate = torch.cat([ei, ei[:, inside : inside + 1]], dim=1)
    assert diffusion_graph(duplicate, (N, N)).band == 0
    # A bipartite graph has none.
    assert diffusion_graph(ei[:, ei[1] < N - 1], (N, N - 1)).band == 0


@pytest.mark.parametrize("shuffle", [False, True])
def test_storage_order_round_trips_to_the_input_order(shuffle):
    ei = banded_graph(shuffle)
    graph = diffusion_graph(ei, (N, N))
    assert torch.equal(graph.edge_index(), ei)
    values = torch.randn(ei.size(1), 2)
    assert torch.equal(graph.to_input_order(graph.to_csr_order(values)), values)
    # The band's positions in storage order are its [B, w, 3w] blocks.
    src, dst = graph.to_csr_order(ei.t()).t()
    band_dst = graph.band_values(dst[: graph.band_edges].float())
    band_src = graph.band_values(src[: graph.band_edges].float())
    blocks = torch.arange(graph.band_blocks).view(-1, 1, 1)
    assert torch.equal(
        band_dst, ((blocks + 1) * W + torch.arange(W).view(1, W, 1)).float().expand_as(band_dst)
    )
    assert torch.equal(band_src, (blocks * W + torch.arange(3 * W)).float().expand_as(band_src))


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("node_major", [True, False])
@pytest.mark.parametrize("kernel", ["ppr", "heat"])
def test_dot_product_attention_and_diffusion_with_gradients_match_dense(
    shuffle, node_major, kernel
):
    ei = banded_graph(shuffle, seed=1)
    q, k, v = features(seed=1)
    if not node_major:  # head-major [H, N, C] storage, viewed as [N, H, C]
        q, k, v = (
            x.detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
            for x in (q, k, v)
        )
    graph = diffusion_graph(ei, (N, N))
    assert graph.band == W
    attn = edge_softmax_attention(q, k, graph)
    dense = dense_attention(q, k, ei)
    torch.testing.assert_close(attn, edge_values(dense, ei))
    out = diffuse(attn, v, graph, 4, 0.2, kernel=kernel, t=1.5)
    expected = dense_diffuse(dense, v, 4, 0.2, kernel, 1.5)
    torch.testing.assert_close(out, expected)
    weight = torch.randn_like(out)
    got = torch.autograd.grad((out * weight).sum(), (q, k, v))
    want = torch.autograd.grad((expected * weight).sum(), (q, k, v))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("shuffle", [False, True])
def test_gat_attention_and_gradients_match_dense(shuffle):
    ei = banded_graph(shuffle, seed=2)
    gen = torch.Generator().manual_seed(2)
    s, t = (torch.randn(N, H, generator=gen, dtype=torch.float64).requires_grad_() for _ in "st")
    v = features(seed=2)[2]
    attn = edge_gat_attention(s, t, ei, negative_slope=0.2)
    dense = dense_gat_attention(s, t, ei, 0.2)
    torch.testing.assert_close(attn, edge_values(dense, ei))
    out, expected = diffuse(attn, v, ei, 3, 0.1), dense_diffuse(dense, v, 3, 0.1)
    torch.testing.assert_close(out, expected)
    weight = torch.randn_like(out)
    got = torch.autograd.grad((out * weight).sum(), (s, t, v))
    want = torch.autograd.grad((expected * weight).sum(), (s, t, v))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_softmax_shift_and_hop_dropout_gradcheck(monkeypatch):
    # Scores far beyond EXP_SAFE take the row maximum (the band's and the CSR's); hop dropout
    # masks each hop; gradcheck checks the whole backward by finite differences.
    ei = banded_graph(seed=3)
    q, k, v = features(seed=3, heads=2)

    def fn(q, k, v):
        torch.manual_seed(0)
        attn = edge_softmax_attention(q * 40, k * 40, ei)
        return diffuse(attn, v, ei, 3, 0.2, hop_dropout=0.3, training=True)

    assert torch.autograd.gradcheck(fn, (q, k, v))


def test_values_only_gradient_without_history():
    ei = banded_graph(seed=4)
    attn = torch.rand(ei.size(1), 2, dtype=torch.float64)
    v = features(seed=4, heads=2)[2]
    assert torch.autograd.gradcheck(lambda v: diffuse(attn, v, ei, 3, 0.1), (v,))
