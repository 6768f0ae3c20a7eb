import copy
import math

import numpy as np
import pytest
import torch
from torch_geometric import EdgeIndex
from torch_geometric.data import Batch, Data
from torch_geometric.explain import Explainer
from torch_geometric.explain.algorithm import AttentionExplainer
from torch_geometric.nn import GATConv, Sequential
from torch_geometric.typing import WITH_TORCH_SPARSE, SparseTensor
from torch_geometric.utils import add_self_loops, remove_self_loops

from graphdiff.nn import AttentionDiffusion, diffusion_graph

from .reference import (
    adjacencies,
    dense_attention,
    dense_diffuse,
    dense_layer,
    edge_values,
    layer_attention,
    random_graph,
)

ATTENTIONS = ["dot", "gat"]

N, F_IN = 10, 8


def inputs(n=N, channels=F_IN, edges=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, channels, generator=gen, dtype=torch.float64),
        random_graph(n, edges, seed=seed),
    )


def make(*args, **kwargs):
    torch.manual_seed(0)
    return AttentionDiffusion(*args, **kwargs).double()


def test_repr():
    assert str(AttentionDiffusion(16, 8, heads=4)) == (
        "AttentionDiffusion(16, 8, heads=4, hops=5, alpha=0.1, kernel='ppr')"
    )
    assert str(AttentionDiffusion((4, 6), 2, hops=2, alpha=0.3, kernel="heat", t=2.0)) == (
        "AttentionDiffusion((4, 6), 2, heads=1, hops=2, alpha=0.3, kernel='heat', t=2.0)"
    )
    assert str(AttentionDiffusion(16, 8, attention="gat")) == (
        "AttentionDiffusion(16, 8, heads=1, hops=5, alpha=0.1, kernel='ppr', attention='gat')"
    )
    assert str(
        AttentionDiffusion(16, 8, attention="gat", negative_slope=0.1, add_self_loops=True)
    ) == (
        "AttentionDiffusion(16, 8, heads=1, hops=5, alpha=0.1, kernel='ppr', attention='gat', "
        "negative_slope=0.1, add_self_loops=True)"
    )


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_reset_parameters(attention):
    conv = make(F_IN, 4, heads=2, attention=attention)
    if conv.bias is not None:  # GATConv's output bias starts at zero
        torch.nn.init.normal_(conv.bias)
    before = {name: p.clone() for name, p in conv.named_parameters()}
    conv.reset_parameters()
    for name, p in conv.named_parameters():
        assert not torch.equal(before[name], p), name
    assert conv.bias is None or not conv.bias.any()


@pytest.mark.parametrize("attention", ["gat", (6, 5)])
def test_gat_holds_gatconvs_weights(attention):
    # One W for both sides, or GATConv's lin_src / lin_dst for a pair of sizes; no key.
    in_channels = F_IN if attention == "gat" else attention
    conv = make(in_channels, 4, heads=3, attention="gat")
    gat = GATConv(in_channels, 4, heads=3)
    own = {name: p.shape for name, p in conv.named_parameters()}
    theirs = {name: p.shape for name, p in gat.named_parameters()}
    renamed = (
        {"lin_value.weight": "lin.weight"}
        if attention == "gat"
        else {
            "lin_value.weight": "lin_src.weight",
            "lin_query.weight": "lin_dst.weight",
        }
    )
    assert {renamed.get(name, name): shape for name, shape in own.items()} == theirs


@pytest.mark.parametrize("kernel", ["ppr", "heat"])
@pytest.mark.parametrize("concat", [True, False])
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_matches_dense_reference(kernel, concat, attention):
    x, ei = inputs()
    conv = make(
        F_IN,
        4,
        heads=3,
        hops=4,
        alpha=0.2,
        kernel=kernel,
        t=0.7,
        concat=concat,
        attention=attention,
        negative_slope=0.3,
    )
    if conv.bias is not None:
        torch.nn.init.normal_(conv.bias)
    out = conv(x, ei)
    v = conv.lin_value(x).view(N, 3, 4)
    expected = dense_diffuse(layer_attention(conv, x, ei), v, 4, 0.2, kernel, 0.7)
    expected = expected.reshape(N, 12) if concat else expected.mean(1)
    if attention == "dot":  # the dense attention of the layer's own projections, spelled out
        q, k = conv.lin_query(x).view(N, 3, 4), conv.lin_key(x).view(N, 3, 4)
        torch.testing.assert_close(layer_attention(conv, x, ei), dense_attention(q, k, ei))
    else:  # GATConv's output bias
        expected = expected + conv.bias
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_gradcheck(attention):
    # The layer's gradients of its input and every weight against finite differences (on
    # random projections: the functions' gradchecks cover the full Jacobians).
    x, ei = inputs(n=6, edges=14)
    conv = make(F_IN, 2, heads=2, hops=3, alpha=0.2, attention=attention)
    names = [name for name, _ in conv.named_parameters()]

    def fn(x, *params):
        return torch.func.functional_call(conv, dict(zip(names, params)), (x, ei))

    params = [p.detach().clone().requires_grad_() for p in conv.parameters()]
    assert torch.autograd.gradcheck(fn, (x.requires_grad_(), *params), fast_mode=True)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_fused_equals_gather_scatter_reference_with_gradients(attention):
    x, ei = inputs()
    grad = torch.randn(N, 3 * 4, dtype=torch.float64)
    results = []
    for fused in (True, False):
        conv = make(F_IN, 4, heads=3, hops=3, fused=fused, attention=attention)
        x_ = x.clone().requires_grad_()
        out, (_, attn) = conv(x_, ei, return_attention_weights=True)
        (out * grad).sum().backward()
        results.append([out, attn, x_.grad] + [p.grad for p in conv.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def gat_pair(in_channels, heads=3, concat=True, add_loops=False):
    """A GATConv (float64, a random output bias) and an AttentionDiffusion with ``hops=1,
    alpha=0`` holding the same weights, both with ``add_self_loops=add_loops``."""
    torch.manual_seed(1)
    gat = GATConv(in_channels, 4, heads=heads, concat=concat, add_self_loops=add_loops).double()
    torch.nn.init.normal_(gat.bias)
    conv = make(
        in_channels,
        4,
        heads=heads,
        hops=1,
        alpha=0.0,
        concat=concat,
        attention="gat",
        add_self_loops=add_loops,
    )
    pairs = {"lin_value.weight": "lin.weight"}
    if not isinstance(in_channels, int):
        pairs = {"lin_value.weight": "lin_src.weight", "lin_query.weight": "lin_dst.weight"}
    theirs = dict(gat.named_parameters())
    with torch.no_grad():
        for name, p in conv.named_parameters():
            p.copy_(theirs[pairs.get(name, name)])
    return gat, conv, pairs


def assert_same_as_gatconv(gat, conv, pairs, x, ei, gat_ei):
    """Output, and the gradients of the input and of every weight, equal GATConv's."""
    features = x if isinstance(x, tuple) else (x,)
    weight = None
    grads = []
    for module, adj in ((gat, gat_ei), (conv, ei)):
        leaves = [f.detach().clone().requires_grad_() for f in features]
        out = module(tuple(leaves) if isinstance(x, tuple) else leaves[0], adj)
        weight = torch.randn_like(out) if weight is None else weight
        named = dict(module.named_parameters())
        params = [named[name if module is conv else pairs.get(name, name)] for name in names(conv)]
        grads.append([out, *torch.autograd.grad((out * weight).sum(), leaves + params)])
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want)


def names(conv):
    return [name for name, _ in conv.named_parameters()]


@pytest.mark.parametrize("concat", [True, False])
@pytest.mark.parametrize("fused", [True, False])
def test_gat_one_hop_equals_gatconv(concat, fused):
    # The same weights: GATConv's output, attention and gradients, on a graph with
    # self-loops (GATConv adding none), and on one without (GATConv adding them, and
    # AttentionDiffusion given them).
    x, ei = inputs()
    gat, conv, pairs = gat_pair(F_IN, concat=concat)
    conv.fused = fused
    assert_same_as_gatconv(gat, conv, pairs, x, ei, ei)
    _, (_, attn) = conv(x, ei, return_attention_weights=True)
    _, (_, expected) = gat(x, ei, return_attention_weights=True)
    torch.testing.assert_close(attn, expected)
    if WITH_TORCH_SPARSE:
        adj = SparseTensor.from_edge_index(ei, sparse_sizes=(N, N)).t()
        torch.testing.assert_close(conv(x, adj), gat(x, ei))

    loopless = remove_self_loops(random_graph(N, 40, seed=3, self_loops=False))[0]
    gat, _, pairs = gat_pair(F_IN, concat=concat, add_loops=True)
    _, conv, _ = gat_pair(F_IN, concat=concat)
    conv.fused = fused
    assert_same_as_gatconv(gat, conv, pairs, x, add_self_loops(loopless)[0], loopless)


def graph_with_some_loops():
    """A graph without incoming edges into node 0, loops on nodes 2 and 5 (5's twice), and
    none on the others."""
    ei = remove_self_loops(random_graph(N, 30, seed=4, self_loops=False))[0]
    ei = ei[:, ei[1] != 0]
    return torch.cat([ei, torch.tensor([[5, 2, 5], [5, 2, 5]])], dim=1)


@pytest.mark.parametrize("concat", [True, False])
@pytest.mark.parametrize("fused", [True, False])
def test_gat_add_self_loops_equals_gatconvs_default(concat, fused):
    # add_self_loops=True and GATConv's default alike: a graph's loops are replaced by one
    # per node, so node 0 (no incoming edges) attends to itself instead of getting zeros.
    x, _ = inputs()
    gat, conv, pairs = gat_pair(F_IN, concat=concat, add_loops=True)
    conv.fused = fused
    some_loops = graph_with_some_loops()
    for ei in (remove_self_loops(some_loops)[0], some_loops):
        assert 0 not in ei[1]
        assert_same_as_gatconv(gat, conv, pairs, x, ei, ei)
        _, (ei_out, attn) = conv(x, ei, return_attention_weights=True)
        _, (ei_expected, expected) = gat(x, ei, return_attention_weights=True)
        assert torch.equal(ei_out, ei_expected)
        torch.testing.assert_close(attn, expected)
        if WITH_TORCH_SPARSE:  # GATConv's set_diag on a SparseTensor
            adj = SparseTensor.from_edge_index(ei, sparse_sizes=(N, N)).t()
            torch.testing.assert_close(conv(x, adj), gat(x, adj))


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_add_self_loops_on_every_adjacency_type(attention):
    # Every adjacency type gets its loops replaced by one per node; the attention comes back
    # on the adjacency with its loops, in the input's type.
    x, _ = inputs()
    ei = graph_with_some_loops()
    looped = add_self_loops(remove_self_loops(ei)[0], num_nodes=N)[0]
    conv = make(F_IN, 4, heads=2, hops=3, attention=attention, add_self_loops=True)
    expected = dense_layer(conv, x, looped)
    dense = layer_attention(conv, x, looped)
    edges = set(map(tuple, looped.t().tolist()))
    for name, adj in adjacencies(ei, N):
        if name == "DiffusionGraph":
            with pytest.raises(ValueError, match="cannot change a prebuilt DiffusionGraph"):
                conv(x, adj)
            continue
        out, (adj_out, attn) = conv(x, adj, return_attention_weights=True)
        torch.testing.assert_close(out, expected, msg=name)
        assert type(adj_out) is type(adj), name
        if isinstance(adj, SparseTensor):
            dst, src, attn = adj_out.coo()
        elif adj.layout != torch.strided:
            assert adj_out.layout == adj.layout, name
            coo = adj_out.to_sparse_coo().coalesce()
            (dst, src), attn = coo.indices(), coo.values()
        else:
            src, dst = adj_out
        assert sorted(zip(src.tolist(), dst.tolist())) == sorted(edges), name
        torch.testing.assert_close(attn, dense[:, dst, src].t(), msg=name)


@pytest.mark.parametrize("fused", [True, False])
def test_gat_cross_attention_equals_gatconv_with_a_pair_of_sizes(fused):
    # GATConv's lin_src and lin_dst are lin_value and lin_query: 10 sources, 4 targets.
    gen = torch.Generator().manual_seed(2)
    x = (
        torch.randn(N, 6, generator=gen, dtype=torch.float64),
        torch.randn(4, 5, generator=gen, dtype=torch.float64),
    )
    ei = torch.tensor([[0, 3, 9, 2, 5, 7], [0, 0, 1, 2, 3, 3]])
    gat, conv, pairs = gat_pair((6, 5), heads=2)
    conv.fused = fused
    assert_same_as_gatconv(gat, conv, pairs, x, ei, ei)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_all_adjacency_types_agree(attention):
    x, ei = inputs()
    conv = make(F_IN, 4, heads=2, hops=3, attention=attention)
    expected, (_, attn) = conv(x, ei, return_attention_weights=True)
    torch.testing.assert_close(attn, edge_values(layer_attention(conv, x, ei), ei))
    dense = torch.zeros(2, N, N, dtype=torch.float64)
    dense[:, ei[1], ei[0]] = attn.t()
    for name, adj in adjacencies(ei, N):
        for fused in (True, False):
            conv.fused = fused
            out, (adj_out, a) = conv(x, adj, return_attention_weights=True)
            torch.testing.assert_close(out, expected, msg=name)
            if isinstance(adj, SparseTensor):
                row, col, value = adj_out.coo()
                torch.testing.assert_close(value, dense[:, row, col].t(), msg=name)
            elif isinstance(adj, torch.Tensor) and adj.layout != torch.strided:
                coo = adj_out.to_sparse_coo().coalesce()
                (row, col), value = coo.indices(), coo.values()
                torch.testing.assert_close(value, dense[:, row, col].t(), msg=name)
            else:
                assert adj_out is adj
                torch.testing.assert_close(a, attn, msg=name)


@pytest.mark.skipif(not WITH_TORCH_SPARSE, reason="torch_sparse not installed")
def test_sparse_tensor_matches_edge_index():
    x, ei = inputs()
    adj = SparseTensor.from_edge_index(ei, sparse_sizes=(N, N)).t()
    conv = make(F_IN, 4)
    torch.testing.assert_close(conv(x, adj), conv(x, ei))


def test_attention_rows_sum_to_one():
    x, ei = inputs()
    _, (_, attn) = make(F_IN, 4, heads=2)(x, ei, return_attention_weights=True)
    sums = torch.zeros(N, 2, dtype=torch.float64).index_add_(0, ei[1], attn)
    torch.testing.assert_close(sums, torch.ones_like(sums))


def test_structure_is_kept_from_the_second_request_on(fresh_cache):
    x, ei = inputs()
    first = diffusion_graph(ei, (N, N))
    assert not fresh_cache.entries  # asked for once: not kept
    second = diffusion_graph(ei, (N, N))
    assert second is not first and diffusion_graph(ei, (N, N)) is second
    assert fresh_cache.bytes >= second.nbytes() > 0
    other = ei.clone()
    diffusion_graph(other, (N, N))
    before = diffusion_graph(other, (N, N))
    assert before is not second
    other[0, 0] = (other[0, 0] + 1) % N  # in-place change: the cache must not be stale
    after = diffusion_graph(other, (N, N))
    assert after is not before and int(after.edge_index()[0, 0]) == int(other[0, 0])


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_bipartite(attention):
    gen = torch.Generator().manual_seed(1)
    x_src = torch.randn(N, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    x_dst = torch.randn(N, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    _, ei = inputs()
    conv = make((6, 5), 4, heads=2, hops=3, attention=attention)
    out = conv((x_src, x_dst), ei)
    torch.testing.assert_close(out, dense_layer(conv, (x_src, x_dst), ei))
    if attention == "dot":  # the reference spelled out once
        q = conv.lin_query(x_dst).view(N, 2, 4)
        k, v = conv.lin_key(x_src).view(N, 2, 4), conv.lin_value(x_src).view(N, 2, 4)
        torch.testing.assert_close(
            out, dense_diffuse(dense_attention(q, k, ei), v, 3, 0.1).reshape(N, 8)
        )

    # Cross-attention between different node sets: one hop, no teleport.
    x_dst = x_dst[:4]
    ei = torch.tensor([[0, 3, 9, 2, 5], [0, 0, 1, 2, 3]])
    for fused in (True, False):
        cross = make((6, 5), 4, heads=2, hops=1, alpha=0.0, fused=fused, attention=attention)
        out = cross((x_src, x_dst), ei)
        v = cross.lin_value(x_src).view(N, 2, 4)
        attn = layer_attention(cross, (x_src, x_dst), ei)
        expected = (attn @ v.transpose(0, 1)).transpose(0, 1).reshape(4, 8)
        if cross.bias is not None:
            expected = expected + cross.bias
        torch.testing.assert_close(out, expected)
        weight = torch.randn_like(out)
        inputs_ = (x_src, x_dst, *cross.parameters())
        got = torch.autograd.grad((out * weight).sum(), inputs_, allow_unused=True)
        want = torch.autograd.grad((expected * weight).sum(), inputs_, allow_unused=True)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)
        for hops in (0, 2):  # hops=0 would return V, a row per source
            for weights in (False, True):
                with pytest.raises(ValueError, match="sources as targets"):
                    make((6, 5), 4, hops=hops, fused=fused, attention=attention)(
                        (x_src, x_dst), ei, return_attention_weights=weights
                    )


@pytest.mark.parametrize("concat", [True, False])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_graph_without_nodes(concat, fused, attention):
    # An empty batch: [0, H * C] (or [0, C]) out and an empty gradient back, no crash.
    conv = make(F_IN, 3, heads=2, concat=concat, fused=fused, attention=attention)
    x = torch.empty(0, F_IN, dtype=torch.float64, requires_grad=True)
    ei = torch.empty(2, 0, dtype=torch.long)
    out, (_, weights) = conv(x, ei, return_attention_weights=True)
    assert out.shape == (0, 6 if concat else 3) and weights.shape == (0, 2)
    out.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_bfloat16_layer_matches_float64_with_the_same_weights(fused, attention):
    # The core runs in float32 and rounds once: close to the float64 layer whose weights and
    # inputs are the bfloat16 ones.
    x, ei = inputs()
    layer = make(F_IN, 4, heads=2, hops=3, fused=fused, attention=attention).to(torch.bfloat16)
    x16 = x.to(torch.bfloat16)
    out, (_, weights) = layer(x16, ei, return_attention_weights=True)
    assert out.dtype == weights.dtype == torch.bfloat16
    reference = copy.deepcopy(layer).double()
    expected, (_, expected_weights) = reference(x16.double(), ei, return_attention_weights=True)
    torch.testing.assert_close(out.double(), expected, rtol=0.0, atol=0.02)
    torch.testing.assert_close(weights.double(), expected_weights, rtol=0.0, atol=0.005)


@pytest.mark.parametrize("concat", [True, False])
def test_output_can_be_changed_in_place(concat):
    # Autograd forbids in-place changes of a view created inside a custom Function: the
    # layer's output (node-major, like its features) must own its memory.
    x, ei = inputs()
    x.requires_grad_()
    conv = make(F_IN, 4, heads=2, hops=3, concat=concat)
    expected = torch.autograd.grad(conv(x, ei).relu().sum(), x)[0]
    out = conv(x, ei)
    out.relu_()
    torch.testing.assert_close(torch.autograd.grad(out.sum(), x)[0], expected)


def test_dropout_eval_deterministic_training_random():
    x, ei = inputs()
    conv = make(F_IN, 4, heads=2, dropout=0.5, hop_dropout=0.3)
    conv.eval()
    torch.testing.assert_close(conv(x, ei), conv(x, ei))
    conv.train()
    assert not torch.allclose(conv(x, ei), conv(x, ei))


@pytest.mark.parametrize("fused", [True, False])
def test_hop_dropout_keeps_the_expectation(fused):
    # Fresh independent masks per hop with mean one, and every hop is linear in its input:
    # the mean output over many draws is the output without dropout.
    x, ei = inputs()
    conv = make(F_IN, 4, heads=2, hops=3, hop_dropout=0.3, fused=fused)
    with torch.no_grad():
        expected = conv.eval()(x, ei)
        conv.train()
        torch.manual_seed(0)
        draws = torch.stack([conv(x, ei) for _ in range(2000)])
    standard_error = draws.std(dim=0) / draws.size(0) ** 0.5
    assert ((draws.mean(dim=0) - expected).abs() <= 5 * standard_error + 1e-12).all()
    assert (draws.std(dim=0) > 0).any()  # the masks were really drawn


def test_bad_arguments():
    with pytest.raises(ValueError, match="hops"):
        AttentionDiffusion(4, 4, hops=-1)
    with pytest.raises(ValueError, match="alpha"):
        AttentionDiffusion(4, 4, alpha=2.0)
    with pytest.raises(ValueError, match="kernel"):
        AttentionDiffusion(4, 4, kernel="diffusion")
    for bad in (0, True, 2.0):
        with pytest.raises(ValueError, match="'heads'"):
            AttentionDiffusion(4, 4, heads=bad)
    for bad in (0, -2, 2.5):
        with pytest.raises(ValueError, match="'out_channels'"):
            AttentionDiffusion(4, bad)
    for bad in ((4,), "4", 0, (4, 0), (4, 5, 6)):
        with pytest.raises(ValueError, match="'in_channels'"):
            AttentionDiffusion(bad, 4)
    for bad in ("a", 1.0, -0.1, True):
        with pytest.raises(ValueError, match="'dropout'"):
            AttentionDiffusion(4, 4, dropout=bad)
    for bad in ("GAT", "additive", None):
        with pytest.raises(ValueError, match="'attention' must be one of \\('dot', 'gat'\\)"):
            AttentionDiffusion(4, 4, attention=bad)
    for bad in ("0.2", math.inf, math.nan, True):
        with pytest.raises(ValueError, match="'negative_slope'"):
            AttentionDiffusion(4, 4, attention="gat", negative_slope=bad)
    bipartite = make((F_IN, 5), 4, add_self_loops=True)
    with pytest.raises(ValueError, match=r"as many targets as sources \(got 10 sources and 4"):
        bipartite((inputs()[0], torch.randn(4, 5, dtype=torch.float64)), inputs()[1][:, :3] % 4)
    x, ei = inputs()
    # Accepted: lazy input sizes, an int dropout, pairs of channels, NumPy numbers, sparse
    # adjacencies with a vector per edge (the values are never read).
    lazy = make(-1, 4, dropout=0)
    torch.testing.assert_close(lazy(x, ei), dense_layer(lazy, x, ei))
    numpy_args = make(np.int64(F_IN), np.int64(4), heads=np.int64(2), dropout=np.float32(0.1))
    torch.testing.assert_close(
        numpy_args.eval()(x, ei), make(F_IN, 4, heads=2, dropout=0.1).eval()(x, ei)
    )
    with_vectors = torch.sparse_coo_tensor(ei.flip(0), torch.randn(ei.size(1), 3), (N, N, 3))
    torch.testing.assert_close(make(F_IN, 4)(x, with_vectors), make(F_IN, 4)(x, ei))
    lazy = make((-1, F_IN), 4)
    torch.testing.assert_close(lazy(x, ei), dense_layer(lazy, x, ei))
    torch.testing.assert_close(make([F_IN, F_IN], 4)(x, ei), make(F_IN, 4)(x, ei))
    with pytest.raises(ValueError, match="in_channels"):
        make(F_IN + 1, 4)(x, ei)
    with pytest.raises(ValueError, match="edge_index"):
        make(F_IN, 4)(x, ei + N)
    for size in ((N + 1, N + 1), (N + 1, None), (None, N + 1)):
        with pytest.raises(ValueError, match="does not match the features"):
            make(F_IN, 4)(x, EdgeIndex(ei, sparse_size=size))
    batched = torch.stack([torch.eye(N, dtype=torch.float64)] * 2).to_sparse_csr()
    with pytest.raises(ValueError, match="one \\[num_targets, num_sources\\] adjacency"):
        make(F_IN, 4)(x, batched)


def test_bad_features_are_named_before_the_projections():
    # A TypeError naming 'x', not torch's dtype error from inside the linear layer.
    x, ei = inputs()
    conv = make(F_IN, 4)
    with pytest.raises(TypeError, match="'x' must be floating point"):
        conv(torch.zeros(N, F_IN, dtype=torch.long), ei)
    with pytest.raises(TypeError, match=r"'x \(targets\)' must be floating point"):
        conv((x, torch.zeros(N, F_IN, dtype=torch.long)), ei)
    for bad in ([[1.0] * F_IN], (x,), None):
        with pytest.raises(TypeError, match="'x' must be a Tensor or a pair"):
            conv(bad, ei)


@pytest.mark.parametrize("name", ["alpha", "t", "hop_dropout"])
def test_bool_is_not_a_diffusion_number(name):
    with pytest.raises(ValueError, match=f"'{name}'"):
        AttentionDiffusion(4, 4, **{name: True})


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_hops_zero_returns_values_without_computing_attention(attention, monkeypatch):
    x, ei = inputs()
    conv = make(F_IN, 4, heads=2, hops=0, attention=attention)
    values = conv.lin_value(x) if conv.bias is None else conv.lin_value(x) + conv.bias
    monkeypatch.setattr(conv, "_edge_attention", None)  # any call would raise TypeError
    torch.testing.assert_close(conv(x, ei), values)
    monkeypatch.undo()
    out, (_, attn) = conv(x, ei, return_attention_weights=True)
    torch.testing.assert_close(out, values)
    torch.testing.assert_close(attn, edge_values(layer_attention(conv, x, ei), ei))


def test_sequential():
    x, ei = inputs()
    model = Sequential(
        "x, edge_index",
        [
            (make(F_IN, 4, heads=2), "x, edge_index -> x"),
            torch.nn.ReLU(),
            (make(8, 3, heads=2, concat=False), "x, edge_index -> x"),
        ],
    )
    first, second = [m for m in model.modules() if isinstance(m, AttentionDiffusion)]
    torch.testing.assert_close(
        model(x, ei), dense_layer(second, dense_layer(first, x, ei).relu(), ei)
    )


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_batch_of_graphs_equals_graphs_one_by_one(attention):
    graphs = [Data(x=inputs(n, seed=n)[0], edge_index=inputs(n, seed=n)[1]) for n in (5, 9, 7)]
    batch = Batch.from_data_list(graphs)
    conv = make(F_IN, 4, heads=2, hops=4, attention=attention)
    out = conv(batch.x, batch.edge_index)
    expected = torch.cat([conv(g.x, g.edge_index) for g in graphs])
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_torch_compile(attention):
    x, ei = inputs()
    x = x.float()
    torch.manual_seed(0)
    conv = AttentionDiffusion(F_IN, 4, heads=2, hops=3, attention=attention)
    # aot_eager: dynamo + AOTAutograd around the fused kernels (a graph break); inductor also
    # runs it but its C++ compile takes over a minute on 2 cores.
    compiled = torch.compile(conv, backend="aot_eager")
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = compiled(x1, ei)
    torch.testing.assert_close(out, conv(x, ei))
    out.sum().backward()
    conv(x2, ei).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = AttentionDiffusion(F_IN, 4, heads=2, hops=2)
        self.conv2 = AttentionDiffusion(8, 3, heads=1, hops=2)

    def forward(self, x, edge_index):
        return self.conv2(self.conv1(x, edge_index).relu(), edge_index)


def test_attention_explainer_returns_edge_mask(monkeypatch):
    x, ei = inputs()
    x = x.float()
    explainer = Explainer(
        _Net(),
        algorithm=AttentionExplainer(),
        explanation_type="model",
        node_mask_type=None,
        edge_mask_type="object",
        model_config=dict(mode="multiclass_classification", task_level="node", return_type="raw"),
    )
    messages = []
    original = AttentionDiffusion.message
    monkeypatch.setattr(
        AttentionDiffusion,
        "message",
        lambda self, x_j, alpha: messages.append(alpha) or original(self, x_j, alpha),
    )
    explanation = explainer(x, ei, index=2)
    assert len(messages) == 2 + 2  # the reference path: one propagate per hop, two layers
    mask = explanation.edge_mask
    assert mask.shape == (ei.size(1),)
    assert (mask >= 0).all() and mask.sum() > 0
    # The mask follows the input edge order: permuting the edges permutes the mask.
    perm = torch.randperm(ei.size(1), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(explainer(x, ei[:, perm], index=2).edge_mask, mask[perm])


def test_structure_cache_entries_die_with_their_edge_index(fresh_cache):
    import gc

    for _ in range(5):
        edge_index = torch.arange(10).repeat(2, 1)  # sorted by target, like every pattern
        diffusion_graph(edge_index, (10, 10))
        graph = diffusion_graph(edge_index, (10, 10))
        assert diffusion_graph(edge_index, (10, 10)) is graph
        assert len(fresh_cache.entries) == 1
        del edge_index, graph
        gc.collect()
        assert not fresh_cache.entries


def test_a_readmitted_entry_keeps_one_clean_up_for_its_edge_index(fresh_cache):
    import gc

    kept = torch.arange(10).repeat(2, 1)
    for length in range(20, 40):  # each new length evicts the structure of `kept`, then readmits
        fresh_cache.set_budget(0)
        fresh_cache.set_budget(2**20)
        other = torch.arange(length).repeat(2, 1)
        diffusion_graph(other, (length, length))
        for _ in range(2):
            diffusion_graph(kept, (10, 10))
    assert sum(finalizer.alive for finalizer in fresh_cache.finalizers.values()) <= 2
    del kept, other
    gc.collect()
    assert not fresh_cache.finalizers and not fresh_cache.entries


def test_negative_slope_with_dot_attention_is_refused():
    with pytest.raises(ValueError, match="'negative_slope' shapes the \"gat\" score only"):
        AttentionDiffusion(8, 4, heads=2, negative_slope=0.1)
    assert (
        AttentionDiffusion(8, 4, heads=2, attention="gat", negative_slope=0.1).negative_slope == 0.1
    )
