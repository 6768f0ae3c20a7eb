"""The layer compiled whole on a prepared DiffusionGraph: no graph break, one graph for every
length (``dynamic=True``), and the values and gradients of eager and of the dense reference."""

import pytest
import torch
import torch._dynamo

from graphdiff.nn import AttentionDiffusion, DiffusionGraph, diffusion_graph
from graphdiff.nn import graph as graph_module
from graphdiff.patterns import BlockWindow, Global, Random

from .reference import dense_layer, random_graph

HEADS, F_IN = 2, 8


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def layer(attention):
    torch.manual_seed(0)
    return AttentionDiffusion(F_IN, 4, heads=HEADS, hops=3, attention=attention).double()


def graph_and_features(n, banded=False):
    """A random graph, or one whose block window (blocks of 4 tokens) forms a band."""
    if banded:
        ei = (BlockWindow(8) | Global(1) | Random(2, seed=n))(n)
    else:
        ei = random_graph(n, 3 * n, seed=n)
    graph = diffusion_graph(ei, (n, n)).prepare(HEADS)
    assert graph.band == (4 if banded else 0)
    x = torch.randn(n, F_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    return ei, graph, x.requires_grad_()


@pytest.mark.parametrize("attention", ["dot", "gat"])
def test_the_layer_is_one_graph_on_a_prepared_graph(attention):
    _, graph, x = graph_and_features(10)
    explanation = torch._dynamo.explain(layer(attention))(x, graph)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


@pytest.mark.parametrize("banded", [False, True])
@pytest.mark.parametrize("attention", ["dot", "gat"])
def test_one_compiled_layer_serves_every_length(attention, banded, monkeypatch):
    monkeypatch.setattr(graph_module, "MIN_BAND_BLOCK", 4)
    monkeypatch.setattr(graph_module, "MIN_DENSE_EDGES", 0)
    conv = layer(attention)
    # aot_eager: AOTAutograd traces the backward operators too (inductor's C++ build would
    # take minutes on a small machine).
    compiled = torch.compile(conv, backend="aot_eager", fullgraph=True, dynamic=True)
    # Banded: multiples of the blocks, whose heads share a call as one band (a length off
    # the blocks runs head by head: another stacking, another graph).
    lengths = (44, 52, 60) if banded else (10, 13, 17)
    for n in lengths:
        ei, graph, x = graph_and_features(n, banded)
        # The first call compiles; the other lengths must not.
        with torch._dynamo.config.patch(error_on_recompile=n > lengths[0]):
            out = compiled(x, graph)
        expected = conv(x, graph)
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close(out, dense_layer(conv, x, ei))
        weights = torch.randn_like(out)  # a loss whose gradient differs from node to node
        inputs = [x, *conv.parameters()]
        grads = torch.autograd.grad((out * weights).sum(), inputs)
        for got, want in zip(grads, torch.autograd.grad((expected * weights).sum(), inputs)):
            torch.testing.assert_close(got, want)


def test_an_unprepared_graph_is_refused_with_the_way_out():
    conv, (ei, _, x) = layer("dot"), graph_and_features(10)
    graph = DiffusionGraph(ei[0], ei[1], (10, 10))  # nothing built ahead
    with pytest.raises(torch._dynamo.exc.Unsupported, match=r"graph\.prepare\(heads\)"):
        torch.compile(conv, backend="eager", fullgraph=True)(x, graph)
    with pytest.raises(RuntimeError, match=r"graph\.prepare\(heads\)"):
        torch.export.export(conv, (x, graph))


def test_one_exported_layer_serves_every_length_of_a_banded_graph(monkeypatch):
    # The heads of each length share one band (a stack with padding): its sizes follow N.
    monkeypatch.setattr(graph_module, "MIN_BAND_BLOCK", 4)
    monkeypatch.setattr(graph_module, "MIN_DENSE_EDGES", 0)
    conv = layer("dot")
    inputs = [graph_and_features(n, banded=True)[1:] for n in (44, 52, 60)]
    examples = torch.export.AdditionalInputs()
    for graph, x in inputs[:2]:
        examples.add((x.detach(), graph))
    program = torch.export.export(
        conv, (inputs[0][1].detach(), inputs[0][0]), dynamic_shapes=examples
    )
    for graph, x in inputs:  # the third length was never seen
        torch.testing.assert_close(program.module()(x.detach(), graph), conv(x.detach(), graph))
