"""Whole models on prepared batches: what the padded input gives, compiled whole
(``torch.compile(fullgraph=True, dynamic=True)``: no graph break, one graph for every length)
and exported (``torch.export``, one program for every length), against eager."""

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from torch.export import AdditionalInputs

from graphdiff.models import (
    Diffuser,
    DiffuserConfig,
    DiffuserForMaskedLM,
    DiffuserForSequenceClassification,
    PreparedBatch,
)

VOCAB = 12


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def config(**overrides):
    return DiffuserConfig.tiny(vocab_size=VOCAB, pattern="Window(4) | Global(1)", **overrides)


def classifier(**overrides):
    torch.manual_seed(0)
    return DiffuserForSequenceClassification(config(**overrides)).eval()


def padded(length, seed=0):
    """Two sequences, the second three tokens shorter (right padding)."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, VOCAB, (2, length), generator=gen)
    return tokens, torch.arange(length) < torch.tensor([[length], [length - 3]])


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_a_prepared_batch_gives_what_its_input_gives(pooling):
    model = classifier(pooling=pooling)
    tokens, mask = padded(17)
    prepared = model.diffuser.prepare(tokens, mask)
    assert isinstance(prepared, PreparedBatch) and prepared.num_nodes == int(mask.sum())
    assert model.diffuser.prepare(prepared) is prepared
    torch.testing.assert_close(model(prepared), model(tokens, mask))
    states, (edge_index, attentions) = model.diffuser(prepared, return_attention_weights=True)
    expected, (expected_edges, expected_attentions) = model.diffuser(
        tokens, mask, return_attention_weights=True
    )
    torch.testing.assert_close(states, expected[mask])
    assert torch.equal(edge_index, expected_edges)
    torch.testing.assert_close(attentions, expected_attentions)
    select = torch.rand(prepared.num_nodes, generator=torch.Generator().manual_seed(1)) > 0.5
    torch.manual_seed(0)
    lm = DiffuserForMaskedLM(config()).eval()
    torch.testing.assert_close(lm(prepared, select=select), lm(tokens, mask)[mask][select])


def test_the_model_is_one_graph_on_a_prepared_batch():
    model, encoder = classifier(), classifier().diffuser
    prepared = model.diffuser.prepare(*padded(17))
    for module in (model, encoder):
        explanation = torch._dynamo.explain(module)(prepared)
        assert explanation.graph_break_count == 0 and explanation.graph_count == 1


@pytest.mark.slow
def test_one_compiled_model_serves_every_length():
    model = classifier(pooling="mean")
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=True)
    labels = torch.tensor([0, 1])
    for length in (17, 23, 31):
        prepared = model.diffuser.prepare(*padded(length, seed=length))
        with torch._dynamo.config.patch(error_on_recompile=length > 17):
            logits = compiled(prepared)
        expected = model(prepared)
        torch.testing.assert_close(logits, expected)
        params = list(model.parameters())
        grads = torch.autograd.grad(F.cross_entropy(logits, labels), params)
        expected_grads = torch.autograd.grad(F.cross_entropy(expected, labels), params)
        for got, want in zip(grads, expected_grads):
            torch.testing.assert_close(got, want)


def test_one_exported_model_serves_every_length():
    torch.manual_seed(0)
    encoder = Diffuser(config()).eval()
    # Prepared with gradients enabled, as export traces: the transposed structure is built.
    batches = [encoder.prepare(*padded(length, seed=length)) for length in (17, 23, 31)]
    examples = AdditionalInputs()
    for prepared in batches[:2]:
        examples.add((prepared,))
    program = torch.export.export(encoder, (batches[0],), dynamic_shapes=examples)
    assert {"graphdiff.edge_attention", "graphdiff.diffusion"} <= {
        f"{node.target.namespace}.{node.target._opname}"
        for node in program.graph.nodes
        if isinstance(node.target, torch._ops.OpOverload)
    }
    for prepared in batches:  # the third length was never seen
        torch.testing.assert_close(program.module()(prepared), encoder(prepared))
