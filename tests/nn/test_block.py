import copy

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GPSConv, Sequential
from torch_geometric.utils import add_self_loops, remove_self_loops

from graphdiff.nn import DiffusionBlock

from .reference import adjacencies, dense_layer, random_graph

N, C = 10, 8
ATTENTIONS = ["dot", "gat"]


def inputs(n=N, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, C, generator=gen, dtype=torch.float64), random_graph(n, 40, seed=seed)


def make(**kwargs):
    """A float64 block whose LayerNorms and GAT bias are not at their identity/zero start."""
    torch.manual_seed(0)
    block = DiffusionBlock(C, **{"heads": 2, "hops": 3, **kwargs}).double()
    with torch.no_grad():
        for norm in (block.attention_norm, block.ffn_norm):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_()
        if block.diffusion.bias is not None:
            block.diffusion.bias.normal_()
    return block


def reference(block, x, edge_index):
    """The block by hand: dense attention diffusion, LayerNorm and the FFN from the weights."""

    def layer_norm(norm, x):
        centred = x - x.mean(-1, keepdim=True)
        scale = (centred.square().mean(-1, keepdim=True) + norm.eps).rsqrt()
        return centred * scale * norm.weight + norm.bias

    first, act, _, second = block.ffn
    attention = dense_layer(block.diffusion, layer_norm(block.attention_norm, x), edge_index)
    x = x + attention @ block.lin_out.weight.t() + block.lin_out.bias
    hidden = act(layer_norm(block.ffn_norm, x) @ first.weight.t() + first.bias)
    return x + hidden @ second.weight.t() + second.bias


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_matches_hand_written_reference_with_gradients(attention):
    x, ei = inputs()
    block = make(attention=attention, act="gelu", ffn_channels=12).eval()
    x = x.requires_grad_()
    out = block(x, ei)
    expected = reference(block, x, ei)
    torch.testing.assert_close(out, expected)
    weight = torch.randn_like(out)
    params = list(block.parameters())
    got = torch.autograd.grad((out * weight).sum(), [x, *params])
    want = torch.autograd.grad((expected * weight).sum(), [x, *params])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_defaults():
    block = DiffusionBlock(16, heads=4)
    assert str(block) == (
        "DiffusionBlock(16, heads=4, hops=5, alpha=0.1, kernel='ppr', attention='dot', "
        "ffn_channels=64, dropout=0.0)"
    )
    assert str(
        DiffusionBlock(
            8, kernel="heat", t=2.0, attention_dropout=0.1, add_self_loops=True, dropout=0.2
        )
    ) == (
        "DiffusionBlock(8, heads=1, hops=5, alpha=0.1, kernel='heat', t=2.0, "
        "attention_dropout=0.1, add_self_loops=True, attention='dot', ffn_channels=32, "
        "dropout=0.2)"
    )
    assert block.ffn[0].out_features == 64 and isinstance(block.ffn[1], torch.nn.ReLU)
    assert (block.diffusion.heads, block.diffusion.out_channels) == (4, 4)
    gat = DiffusionBlock(16, heads=2, attention="gat", kernel="heat", negative_slope=0.1)
    assert (gat.diffusion.attention, gat.diffusion.kernel) == ("gat", "heat")
    assert gat.diffusion.negative_slope == 0.1


def test_dropout_only_in_training():
    x, ei = inputs()
    block = make(dropout=0.3, attention_dropout=0.3)
    torch.testing.assert_close(block.eval()(x, ei), reference(block, x, ei))
    block.train()
    assert not torch.allclose(block(x, ei), block(x, ei))


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_every_adjacency_type(attention):
    x, ei = inputs()
    block = make(attention=attention)
    expected = reference(block, x, ei)
    for name, adj in adjacencies(ei, N):
        torch.testing.assert_close(block(x, adj), expected, msg=name)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_add_self_loops_reaches_the_layer(attention):
    # A node without incoming edges: with add_self_loops=True the block equals the reference
    # on the graph with a loop per node.
    x, ei = inputs()
    ei = remove_self_loops(ei)[0]
    ei = ei[:, ei[1] != 0]
    block = make(attention=attention, add_self_loops=True)
    torch.testing.assert_close(
        block(x, ei), reference(block, x, add_self_loops(ei, num_nodes=N)[0])
    )


def test_sequential():
    x, ei = inputs()
    first, second = make(), make(attention="gat", heads=4)
    model = Sequential(
        "x, edge_index",
        [(first, "x, edge_index -> x"), torch.nn.ReLU(), (second, "x, edge_index -> x")],
    )
    torch.testing.assert_close(model(x, ei), reference(second, reference(first, x, ei).relu(), ei))


class _Reference(torch.nn.Module):
    """The hand-written block as a module, to stand in for the block inside GPSConv."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x, edge_index):
        return reference(self.block, x, edge_index)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_local_conv_of_gpsconv(attention):
    # GPSConv calls conv(x, edge_index) and adds its own residual, norm, global attention and
    # MLP: with the hand-written block in its place (the same weights everywhere), the same
    # output; the block's gradients arrive; GPSConv's reset_parameters reaches the block.
    graphs = [Data(x=inputs(n, seed=n)[0], edge_index=inputs(n, seed=n)[1]) for n in (6, 9)]
    batch = Batch.from_data_list(graphs)
    block = make(attention=attention)
    torch.manual_seed(1)
    gps = GPSConv(C, conv=block, heads=2).double().eval()
    expected_model = copy.deepcopy(gps)
    expected_model.conv = _Reference(expected_model.conv)
    out = gps(batch.x, batch.edge_index, batch.batch)
    expected = expected_model(batch.x, batch.edge_index, batch.batch)
    torch.testing.assert_close(out, expected)
    without_local = copy.deepcopy(gps)
    without_local.conv = None
    assert not torch.allclose(out, without_local(batch.x, batch.edge_index, batch.batch))
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.any() for p in block.parameters())
    gps.reset_parameters()
    assert not block.ffn_norm.bias.any() and (block.ffn_norm.weight == 1).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"'channels' \(10\) must split into 'heads' \(3\)"):
        DiffusionBlock(10, heads=3)
    for name, bad in (("channels", 0), ("heads", 0), ("heads", 2.0), ("ffn_channels", 0)):
        with pytest.raises(ValueError, match=f"'{name}'"):
            DiffusionBlock(**{"channels": 8, name: bad})
    for name in ("dropout", "attention_dropout"):
        with pytest.raises(ValueError, match=f"'{name}'"):
            DiffusionBlock(8, **{name: 1.0})
    with pytest.raises(ValueError, match="'attention'"):
        DiffusionBlock(8, attention="additive")
    # What the block sets itself: an error naming them, not a late shape error or a clash.
    for kwargs in ({"concat": False}, {"out_channels": 4}, {"in_channels": 8, "concat": True}):
        names = ", ".join(sorted(kwargs))
        with pytest.raises(ValueError, match=f"sets AttentionDiffusion's {names} itself"):
            DiffusionBlock(8, heads=2, **kwargs)
    x, ei = inputs()
    with pytest.raises(ValueError, match=r"'x' must be a \[num_nodes, 8\] Tensor"):
        make()(F.pad(x, (0, 1)), ei)
    with pytest.raises(ValueError, match="does not use edge features"):
        make()(x, ei, edge_attr=torch.ones(ei.size(1), 3))
    torch.testing.assert_close(make()(x, ei, edge_attr=None), make()(x, ei))


def test_gpsconv_edge_attr_is_an_error():
    # GPSConv hands its keyword arguments to the local conv: edge features are refused there.
    x, ei = inputs()
    gps = GPSConv(C, conv=make(), heads=2).double()
    with pytest.raises(ValueError, match="does not use edge features"):
        gps(x, ei, edge_attr=torch.ones(ei.size(1), 3, dtype=torch.float64))
