"""The layer inside the tools PyG pipelines use: inference mode, pickling, torch.compile,
MessagePassing options and higher-order gradients."""

import pickle

import pytest
import torch

from graphdiff.models import DiffuserConfig, DiffuserForSequenceClassification
from graphdiff.nn import AttentionDiffusion, DiffusionGraph

EDGE_INDEX = torch.tensor([[0, 1, 2, 3, 4, 5, 1], [1, 0, 3, 2, 5, 4, 3]])  # unsorted by target


def layer(**kwargs):
    torch.manual_seed(0)
    return AttentionDiffusion(5, 3, heads=2, hops=3, **kwargs)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("attention", ["dot", "gat"])
def test_inference_mode_matches_no_grad_and_leaves_the_graph_trainable(fused, attention):
    conv, x = layer(fused=fused, attention=attention), torch.randn(6, 5)
    with torch.no_grad():
        expected = conv(x, EDGE_INDEX)
    with torch.inference_mode():  # an edge_index made here has no version counter
        made_inside = EDGE_INDEX.clone()
        torch.testing.assert_close(conv(x, made_inside), expected)
    edge_index = EDGE_INDEX.clone()
    with torch.inference_mode():  # the first call builds (and caches) the structure
        conv(x, edge_index)
    x = x.requires_grad_()
    out, (_, attention) = conv(x, edge_index, return_attention_weights=True)
    (out.sum() + attention.sum()).backward()  # autograd can save the cached structure
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_a_sparse_adjacency_made_under_inference_mode_works_outside_it():
    conv, x = layer(), torch.randn(6, 5)
    values = torch.ones(EDGE_INDEX.size(1))
    expected = conv(x, torch.sparse_coo_tensor(EDGE_INDEX.flip(0), values, (6, 6)))
    with torch.inference_mode():  # uncoalesced, as built: coalescing happens in the layer
        adj = torch.sparse_coo_tensor(EDGE_INDEX.flip(0), values, (6, 6))
        torch.testing.assert_close(conv(x, adj), expected)
    torch.testing.assert_close(conv(x, adj), expected)


def test_a_model_evaluated_under_inference_mode_first_still_trains():
    model = DiffuserForSequenceClassification(
        DiffuserConfig.tiny(vocab_size=12, pattern="Window(4) | Global(1)")
    )
    tokens, mask = torch.randint(1, 12, (2, 23)), torch.ones(2, 23, dtype=torch.bool)
    with torch.inference_mode():  # e.g. Lightning's sanity validation: patterns built here
        model.eval()(tokens, mask)
    model.train()(tokens, mask).sum().backward()
    assert model.diffuser.embeddings.tokens.weight.grad is not None


@pytest.mark.parametrize(
    "option", [{"aggr": "mean"}, {"aggr": "max"}, {"flow": "target_to_source"}]
)
def test_message_passing_options_the_kernels_do_not_implement_are_refused(option):
    with pytest.raises(ValueError, match="AttentionDiffusion supports only"):
        layer(**option)


def test_a_prebuilt_graph_pickles_after_a_multi_head_forward():
    graph, x = (
        DiffusionGraph(EDGE_INDEX[0], EDGE_INDEX[1], (6, 6)),
        torch.randn(6, 5, requires_grad=True),
    )
    conv = layer()
    expected = conv(x, graph)
    expected.sum().backward()  # builds (and caches) the stacked graph of the two heads
    restored = pickle.loads(pickle.dumps(graph))
    torch.testing.assert_close(conv(x, restored), expected)


@pytest.mark.parametrize("loss", ["square", "sum", "mean"])
def test_second_derivatives_are_a_clear_error(loss):
    # "sum" and "mean" are linear in the output (a WGAN critic): the kernels' backward sees a
    # constant gradient, and torch's once_differentiable let their second derivative be zero.
    conv, x = layer(), torch.randn(6, 5, requires_grad=True)
    out = conv(x, EDGE_INDEX)
    value = out.square().sum() if loss == "square" else getattr(out, loss)()
    with pytest.raises(RuntimeError, match="differentiate twice"):
        torch.autograd.grad(value, x, create_graph=True)


def test_compiled_model_on_padded_input_matches_eager():
    torch.manual_seed(0)
    model = DiffuserForSequenceClassification(
        DiffuserConfig.tiny(vocab_size=12, pattern="Window(4) | Global(1)")
    ).eval()
    tokens = torch.randint(1, 12, (2, 17))
    mask = torch.arange(17) < torch.tensor([17, 9]).unsqueeze(1)
    compiled = torch.compile(model, backend="eager")  # dynamo's tracing, without a C++ build
    torch.testing.assert_close(compiled(tokens, mask), model(tokens, mask))
