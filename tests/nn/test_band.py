"""Graphs with dense parts: a block band, whose edges run as dense [w, 3w] blocks, and
global tokens, whose rows and columns run as dense matrices. Every kernel must give what
the dense references give, whatever order the edges came in."""

import pickle

import pytest
import torch
import torch.utils._pytree as pytree

from graphdiff.nn import AttentionDiffusion, DiffusionGraph, diffusion_graph
from graphdiff.nn import graph as graph_module
from graphdiff.nn._core import stack_edges, stack_heads, stacks, unstack_edges
from graphdiff.nn.functional import (
    diffuse,
    diffuse_stacked,
    edge_gat_attention,
    edge_softmax_attention,
    gat_attention_stacked,
    softmax_attention_stacked,
)
from graphdiff.patterns import BlockWindow, Global, Random, Window, diffuser

from .reference import (
    assert_same_values_and_gradients,
    dense_attention,
    dense_diffuse,
    dense_gat_attention,
    edge_values,
)

N, H, C, W = 44, 3, 4, 4  # blocks of 4 tokens: 11 blocks, blocks 1 .. 9 in the band


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(graph_module, "MIN_BAND_BLOCK", W)
    monkeypatch.setattr(graph_module, "MIN_DENSE_EDGES", 0)
    monkeypatch.setattr(graph_module, "MIN_UNSTACKED_BAND_EDGES", 0)


# The official block window (blocks of W tokens), two global tokens and three random keys
# per query: a band of W and global rows and columns, with other edges in and around them;
# and each dense part alone.
PATTERNS = {
    "band and global": lambda seed: BlockWindow(2 * W) | Global(2) | Random(3, seed=seed),
    "band": lambda seed: BlockWindow(2 * W) | Random(3, seed=seed),
    "global": lambda seed: Global(2) | Random(3, seed=seed),
}
DENSE_PARTS = {"band and global": (W, 2), "band": (W, 0), "global": (0, 2)}


def banded_graph(shuffle=False, seed=0, pattern="band and global"):
    ei = PATTERNS[pattern](seed)(N)
    if shuffle:
        ei = ei[:, torch.randperm(ei.size(1), generator=torch.Generator().manual_seed(seed))]
    return ei


def features(seed, heads=H, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(N, heads, C, generator=gen, dtype=dtype).requires_grad_() for _ in range(3)]


@pytest.mark.parametrize(
    "pattern, n, band, num_global",
    [
        (diffuser(window=64, num_global=8, num_random=8), 1024, 32, 8),
        (BlockWindow(64), 160, 32, 0),  # B = 3
        (Window(64) | Global(8), 1024, 16, 8),  # a sliding window of 65 holds blocks of 16
        (Window(16) | Global(1), 512, 0, 1),  # runs of 17: blocks of at most 4 fit
        (Random(8) | Global(3), 512, 0, 3),
        (Random(8), 512, 0, 0),
    ],
)
def test_dense_parts_are_found_where_every_edge_of_them_is_there(
    pattern, n, band, num_global, monkeypatch
):
    monkeypatch.setattr(graph_module, "MIN_BAND_BLOCK", 16)
    graph = diffusion_graph(pattern(n), (n, n))
    assert (graph.band, graph.num_global) == (band, num_global)
    assert graph.num_edges == pattern(n).size(1)
    if band:
        assert graph.band_blocks == n // band - 2
    start = 2 * band if band else num_global
    dense = band * 3 * band * graph.band_blocks + num_global * n + num_global * (n - start)
    assert graph.dense_edges == dense
    assert graph.col.numel() == graph.num_edges - dense


def dense_parts(ei, num_nodes=(N, N)):
    graph = DiffusionGraph(ei[0], ei[1], num_nodes)  # not the cache: a new structure
    return graph.band, graph.num_global


@pytest.mark.parametrize("target, source, parts", [(2 * W, 2 * W + 1, (0, 2)), (0, N - 1, (W, 0))])
def test_a_missing_or_duplicate_edge_means_no_dense_part(target, source, parts):
    # An edge of block 2's band, then one of the first global token's row.
    ei = banded_graph()
    assert dense_parts(ei) == (W, 2)
    inside = ((ei[1] == target) & (ei[0] == source)).nonzero().item()
    missing = torch.cat([ei[:, :inside], ei[:, inside + 1 :]], dim=1)
    assert dense_parts(missing) == parts
    duplicate = torch.cat([ei, ei[:, inside : inside + 1]], dim=1)
    assert dense_parts(duplicate) == parts
    # A bipartite graph has none.
    assert dense_parts(ei[:, ei[1] < N - 1], (N, N - 1)) == (0, 0)


@pytest.mark.parametrize("shuffle", [False, True])
def test_storage_order_round_trips_to_the_input_order(shuffle):
    ei = banded_graph(shuffle)
    graph = diffusion_graph(ei, (N, N))
    assert (graph.band, graph.num_global) == (W, 2)
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
    # Then the global rows [2, N] and columns [N - 2W, 2], row by row (of the one copy).
    (rows, rows_dst, rows_src), (columns, columns_dst, columns_src) = graph.global_blocks(
        torch.arange(graph.num_edges)
    )
    rows, columns = rows.squeeze(0), columns.squeeze(0)
    assert torch.equal(dst[rows], torch.arange(2).view(2, 1).expand(2, N))
    assert torch.equal(src[rows], torch.arange(N).expand(2, N))
    assert torch.equal(dst[columns], torch.arange(2 * W, N).view(-1, 1).expand(-1, 2))
    assert torch.equal(src[columns], torch.arange(2).expand(N - 2 * W, 2))


@pytest.mark.parametrize("pattern", list(PATTERNS))
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("node_major", [True, False])
@pytest.mark.parametrize("kernel", ["ppr", "heat"])
def test_dot_product_attention_and_diffusion_with_gradients_match_dense(
    pattern, shuffle, node_major, kernel
):
    ei = banded_graph(shuffle, seed=1, pattern=pattern)
    q, k, v = features(seed=1)
    if not node_major:  # head-major [H, N, C] storage, viewed as [N, H, C]
        q, k, v = (
            x.detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
            for x in (q, k, v)
        )
    graph = diffusion_graph(ei, (N, N))
    assert (graph.band, graph.num_global) == DENSE_PARTS[pattern]
    attn = edge_softmax_attention(q, k, graph)
    dense = dense_attention(q, k, ei)
    torch.testing.assert_close(attn, edge_values(dense, ei))
    out = diffuse(attn, v, graph, 4, 0.2, kernel=kernel, t=1.5)
    expected = dense_diffuse(dense, v, 4, 0.2, kernel, 1.5)
    assert_same_values_and_gradients(out, expected, (q, k, v))


@pytest.mark.parametrize("pattern", list(PATTERNS))
@pytest.mark.parametrize("shuffle", [False, True])
def test_gat_attention_and_gradients_match_dense(pattern, shuffle):
    ei = banded_graph(shuffle, seed=2, pattern=pattern)
    gen = torch.Generator().manual_seed(2)
    s, t = (torch.randn(N, H, generator=gen, dtype=torch.float64).requires_grad_() for _ in "st")
    v = features(seed=2)[2]
    attn = edge_gat_attention(s, t, ei, negative_slope=0.2)
    dense = dense_gat_attention(s, t, ei, 0.2)
    torch.testing.assert_close(attn, edge_values(dense, ei))
    out, expected = diffuse(attn, v, ei, 3, 0.1), dense_diffuse(dense, v, 3, 0.1)
    assert_same_values_and_gradients(out, expected, (s, t, v))


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_softmax_shift_and_hop_dropout_gradcheck(pattern):
    # Scores far beyond EXP_SAFE take the row maximum (the dense parts' and the CSR's); hop
    # dropout masks each hop; gradcheck checks the whole backward by finite differences.
    ei = banded_graph(seed=3, pattern=pattern)
    q, k, v = features(seed=3, heads=2)

    def fn(q, k, v):
        torch.manual_seed(0)
        attn = edge_softmax_attention(q * 40, k * 40, ei)
        return diffuse(attn, v, ei, 3, 0.2, hop_dropout=0.3, training=True)

    assert torch.autograd.gradcheck(fn, (q, k, v))


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_values_only_gradient_without_history(pattern):
    ei = banded_graph(seed=4, pattern=pattern)
    attn = torch.rand(ei.size(1), 2, dtype=torch.float64)
    v = features(seed=4, heads=2)[2]
    assert torch.autograd.gradcheck(lambda v: diffuse(attn, v, ei, 3, 0.1), (v,))


def test_storage_order_skips_the_reordering_and_gives_the_same_values():
    ei = banded_graph(shuffle=True, seed=5)
    graph = diffusion_graph(ei, (N, N))
    q, k, v = features(seed=5)
    attn = edge_softmax_attention(q, k, graph)
    stored = edge_softmax_attention(q, k, graph, edge_order="storage")
    torch.testing.assert_close(stored, graph.to_csr_order(attn))
    torch.testing.assert_close(graph.to_input_order(stored), attn)
    out = diffuse(attn, v, graph, 3, 0.1)
    torch.testing.assert_close(diffuse(stored, v, graph, 3, 0.1, edge_order="storage"), out)
    gen = torch.Generator().manual_seed(5)
    s, t = (torch.randn(N, H, generator=gen, dtype=torch.float64) for _ in "st")
    torch.testing.assert_close(
        edge_gat_attention(s, t, graph, edge_order="storage"),
        graph.to_csr_order(edge_gat_attention(s, t, graph)),
    )
    for call in (
        lambda: edge_softmax_attention(q, k, graph, edge_order="csr"),
        lambda: edge_gat_attention(s, t, graph, edge_order=None),
        lambda: diffuse(attn, v, graph, edge_order="Storage"),
    ):
        with pytest.raises(ValueError, match="'edge_order' must be one of"):
            call()


def test_small_graphs_have_no_dense_parts(monkeypatch):
    # Below MIN_DENSE_EDGES the heads stack into one CSR call instead.
    ei = banded_graph()
    monkeypatch.setattr(graph_module, "MIN_DENSE_EDGES", ei.size(1) + 1)
    assert dense_parts(ei) == (0, 0)
    monkeypatch.setattr(graph_module, "MIN_DENSE_EDGES", ei.size(1))
    assert dense_parts(ei) == (W, 2)


def test_a_band_off_the_blocks_needs_more_edges(monkeypatch, all_heads_in_one_call):
    # A length that is no multiple of the blocks runs its band head by head, which only
    # larger graphs repay: below MIN_UNSTACKED_BAND_EDGES the band's edges join the CSR (the
    # global tokens stay dense, and every head stacks).
    ei = (BlockWindow(2 * W) | Global(2) | Random(3, seed=0))(N + 1)
    monkeypatch.setattr(graph_module, "MIN_UNSTACKED_BAND_EDGES", ei.size(1) + 1)
    assert dense_parts(ei, (N + 1, N + 1)) == (0, 2)
    assert diffusion_graph(ei, (N + 1, N + 1)).heads_per_call(H) == H
    monkeypatch.setattr(graph_module, "MIN_UNSTACKED_BAND_EDGES", ei.size(1))
    assert dense_parts(ei, (N + 1, N + 1)) == (W, 2)
    assert diffusion_graph(ei.clone(), (N + 1, N + 1)).heads_per_call(H) == 1
    # On the blocks the band is kept at any size.
    assert dense_parts(banded_graph()) == (W, 2)


def test_a_length_off_the_blocks_and_more_global_tokens_than_a_block():
    # 47 tokens: 11 whole blocks of 4 and a part; six global tokens, of which the dense rows
    # hold the first W (the global targets lie before the band), the rest go to the CSR.
    n = 47
    ei = (BlockWindow(2 * W) | Global(6) | Random(3, seed=6))(n)
    graph = diffusion_graph(ei, (n, n))
    assert (graph.band, graph.num_global, graph.band_blocks) == (W, W, n // W - 2)
    gen = torch.Generator().manual_seed(6)
    q, k, v = (
        torch.randn(n, H, C, generator=gen, dtype=torch.float64).requires_grad_() for _ in "qkv"
    )
    out = diffuse(edge_softmax_attention(q, k, graph), v, graph, 3, 0.2)
    dense = dense_attention(q, k, ei)
    expected = dense_diffuse(dense, v, 3, 0.2)
    assert_same_values_and_gradients(out, expected, (q, k, v))


@pytest.mark.parametrize("attention", ["dot", "gat"])
def test_layer_returns_its_attention_in_the_input_order(attention):
    # The layer keeps the attention in storage order; what it returns is in the adjacency's.
    ei = banded_graph(shuffle=True, seed=7)
    torch.manual_seed(7)
    conv = AttentionDiffusion(8, C, heads=H, hops=2, attention=attention).double()
    x = torch.randn(N, 8, dtype=torch.float64)
    out, (_, weights) = conv(x, ei, return_attention_weights=True)
    conv.fused = False  # the reference path: PyG's softmax on the edges as given
    ref_out, (_, ref_weights) = conv(x, ei, return_attention_weights=True)
    torch.testing.assert_close(weights, ref_weights)
    torch.testing.assert_close(out, ref_out)


@pytest.fixture
def all_heads_in_one_call(monkeypatch):
    """Stacks every head of the test graphs, whichever way ``head_calls`` runs the others."""
    monkeypatch.setattr(graph_module, "MAX_STACKED_EDGES", 1 << 20)
    monkeypatch.setattr(graph_module, "MAX_STACKED_NODES", 1 << 16)


def test_a_stack_holds_each_dense_part_of_its_copies_together(all_heads_in_one_call):
    graph = diffusion_graph(banded_graph(shuffle=True), (N, N))
    stack, groups = stacks(graph, H)
    assert (stack.band, stack.num_global, stack.copies, groups) == (W, 2, H, 1)
    # One band over the H N rows: the two blocks around each boundary are padding.
    assert stack.band_blocks == H * N // W - 2
    padding = 2 * 3 * W * W
    assert stack.num_edges == H * graph.num_edges + (H - 1) * padding
    # Every slot but the padding holds exactly one copy's edge.
    slots = stack.copy_slots()
    assert slots.shape == (H, graph.num_edges)
    is_padding = torch.zeros(stack.num_edges, dtype=torch.bool)
    stack.band_padding(is_padding).fill_(True)
    counts = torch.bincount(slots.flatten(), minlength=stack.num_edges)
    assert torch.equal(counts, (~is_padding).long())
    # A length off the blocks would misalign the copies' bands: its heads run one by one.
    off = diffusion_graph((BlockWindow(2 * W) | Global(2))(N + 1), (N + 1, N + 1))
    assert off.band == W and off.heads_per_call(H) == 1
    with pytest.raises(ValueError, match="would not line up"):
        off.stacked(H)


@pytest.mark.parametrize("node_major", [False, True])
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_stack_heads_puts_each_groups_heads_one_after_the_other(node_major, groups):
    x = torch.randn(5, 4, 3).transpose(0, 1) if node_major else torch.randn(4, 5, 3)
    per_group = 4 // groups
    expected = torch.stack(
        [torch.cat(list(x[g * per_group : (g + 1) * per_group])) for g in range(groups)]
    )
    stacked = stack_heads(x, groups)
    assert torch.equal(stacked, expected)
    # Only a node-major x with heads to merge is copied.
    assert (stacked.data_ptr() == x.data_ptr()) == (not node_major or groups == 4)


@pytest.mark.parametrize("attention", ["dot", "gat"])
def test_the_kernels_keep_a_stacks_padding_zero(attention, all_heads_in_one_call):
    # Scores far beyond EXP_SAFE take the softmax's row-maximum path, which must pass over the
    # padding; the gradient's SDDMM must not leave products there.
    graph = diffusion_graph(banded_graph(seed=8), (N, N))
    stack, _ = stacks(graph, H)
    q, k, v = features(seed=8)
    if attention == "dot":
        attn = softmax_attention_stacked(q * 40, k * 40, graph, C**-0.5)
    else:
        s, t = (x.sum(-1) * 40 for x in (q, k))
        attn = gat_attention_stacked(s, t, graph, 0.2)
    assert attn.shape == (1, stack.num_edges)
    assert not stack.band_padding(attn[0]).any()
    assert torch.equal(stack_edges(unstack_edges(attn, graph, H), graph), attn)
    out = diffuse_stacked(attn, v, graph, 3, 0.1, "ppr", 1.0, 0.0, False)
    (grad,) = torch.autograd.grad(out, attn, torch.randn_like(out))
    assert grad.abs().sum() > 0 and not stack.band_padding(grad[0]).any()


@pytest.mark.parametrize("attention", ["dot", "gat"])
def test_rows_without_edges_around_the_band(attention, all_heads_in_one_call):
    # The band alone: each copy's first and last blocks have no edge, and a stack's padding
    # lies on exactly these rows, whose maximum is -inf on the softmax's shift path.
    target = torch.arange(W, N - W).repeat_interleave(3 * W)
    source = (target // W - 1) * W + torch.arange(3 * W).repeat(N - 2 * W)
    ei = torch.stack([source, target])
    graph = diffusion_graph(ei, (N, N))
    assert (graph.band, graph.num_global, graph.heads_per_call(H)) == (W, 0, H)
    q, k, v = features(seed=9)
    if attention == "gat":  # per-node scores as large, as leaves
        q, k = ((x.detach().sum(-1) * 40).requires_grad_() for x in (q, k))
        attn, dense = edge_gat_attention(q, k, graph), dense_gat_attention(q, k, ei)
    else:
        attn = edge_softmax_attention(q * 40, k * 40, graph)
        dense = dense_attention(q * 40, k * 40, ei)
    torch.testing.assert_close(attn, edge_values(dense, ei))
    out = diffuse(attn, v, graph, 3, 0.2)
    assert_same_values_and_gradients(out, dense_diffuse(dense, v, 3, 0.2), (q, k, v))


def test_stacks_of_some_heads_each(monkeypatch):
    # Four heads, two per call: two stacks of dense parts, whose heads keep their order.
    ei = banded_graph(shuffle=True, seed=10)
    graph = diffusion_graph(ei, (N, N))
    stack_edges_of_two = 2 * graph.num_edges + 6 * W * W
    monkeypatch.setattr(graph_module, "MAX_STACKED_EDGES", stack_edges_of_two)
    monkeypatch.setattr(graph_module, "MAX_STACKED_NODES", 1 << 16)
    stack, groups = stacks(graph, 4)
    assert (stack.copies, groups, stack.num_edges) == (2, 2, stack_edges_of_two)
    q, k, v = features(seed=10, heads=4)
    attn = edge_softmax_attention(q, k, graph)
    dense = dense_attention(q, k, ei)
    torch.testing.assert_close(attn, edge_values(dense, ei))
    heads = graph.to_csr_order(attn).t()
    assert torch.equal(unstack_edges(stack_edges(heads, graph), graph, 4), heads)
    out = diffuse(attn, v, graph, 3, 0.2, kernel="heat")
    expected = dense_diffuse(dense, v, 3, 0.2, "heat")
    assert_same_values_and_gradients(out, expected, (q, k, v))


def test_a_pickled_stack_keeps_its_copies(all_heads_in_one_call):
    stack = diffusion_graph(banded_graph(seed=11), (N, N)).stacked(H)
    loaded = pickle.loads(pickle.dumps(stack))  # before its transpose is built
    assert (loaded.copies, loaded.num_edges, loaded.band) == (H, stack.num_edges, W)
    # Alone, it sorts its own transpose: the same as the one repeated from its source's.
    for got, want in zip(loaded.transposed(), stack.transposed()):
        assert torch.equal(got, want)


def test_the_exported_graph_spec_survives_saving(all_heads_in_one_call):
    # torch.export saves an input's pytree context as JSON; the loaded spec must equal it,
    # a prepared stack's (with its copies) included.
    graph = diffusion_graph(banded_graph(), (N, N)).prepare(H)
    assert graph.stacked(H).copies == H
    spec = pytree.tree_flatten(graph)[1]
    assert pytree.treespec_loads(pytree.treespec_dumps(spec)) == spec
