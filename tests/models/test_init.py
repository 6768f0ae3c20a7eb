"""A task model started from a pretrained encoder (init_config, initialize_encoder,
extend_positions): the encoder's weights copied exactly, the head fresh, positions tiled as
Longformer tiles them, and outputs checked against the pretrained encoder's own."""

import pytest
import torch
from torch import nn

from graphdiff.models import (
    DiffuserConfig,
    DiffuserForMaskedLM,
    DiffuserForRetrieval,
    DiffuserForSequenceClassification,
    extend_positions,
    init_config,
    initialize_encoder,
)
from graphdiff.models.initialize import ARCHITECTURE_FIELDS

PRETRAINED = dict(
    vocab_size=20,
    hidden=16,
    heads=2,
    ffn=32,
    layers=2,
    max_len=8,
    num_classes=3,
    pad_token_id=1,
    pattern="diffuser(window=2, num_global=1, num_random=2)",
)
# A value other than PRETRAINED's for every architecture field.
OTHER_ARCHITECTURE = dict(
    hidden=32, layers=3, heads=4, ffn=64, positional="none", layer_norm_eps=1e-6, pad_token_id=0
)


def pretrained_model(cls=DiffuserForSequenceClassification, **config):
    torch.manual_seed(0)
    model = cls(DiffuserConfig(**{**PRETRAINED, **config})).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # the norms and biases start constant
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def encoder_of(model):
    return model.config, model.diffuser.state_dict()


def started(cls, pretrained, seed=1, **overrides):
    """A fresh ``cls`` of init_config's configuration, seeded, with the encoder copied in."""
    config = init_config(pretrained.config, **overrides)
    torch.manual_seed(seed)
    model = cls(config).eval()
    initialize_encoder(model, *encoder_of(pretrained))
    return model


def tokens_of(length, batch=2, seed=2):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, PRETRAINED["vocab_size"], (batch, length), generator=generator)
    return tokens, torch.ones(batch, length, dtype=torch.bool)


def test_extend_positions_tiles_and_cuts():
    table = torch.randn(8, 4)
    assert torch.equal(extend_positions(table, 20), torch.cat([table, table, table[:4]]))
    assert torch.equal(extend_positions(table, 8), table)
    assert torch.equal(extend_positions(table, 5), table[:5])
    grown = extend_positions(table, 20)
    grown[0] = 0.0
    assert table[0].ne(0.0).all()  # a copy, not a view
    with pytest.raises(ValueError, match=r"max_len must be a positive integer, got 0"):
        extend_positions(table, 0)
    with pytest.raises(ValueError, match=r"\[P, D\] position table, got \[8\]"):
        extend_positions(table[:, 0], 4)


def test_encoder_weights_are_copied_and_positions_tiled():
    pretrained = pretrained_model(DiffuserForMaskedLM)
    model = started(DiffuserForSequenceClassification, pretrained, max_len=20, num_classes=5)
    assert (model.config.max_len, model.config.num_classes) == (20, 5)
    old, new = pretrained.diffuser.state_dict(), model.diffuser.state_dict()
    assert old.keys() == new.keys()
    table = old["embeddings.positions.weight"]
    assert torch.equal(new["embeddings.positions.weight"], torch.cat([table, table, table[:4]]))
    for name in old.keys() - {"embeddings.positions.weight"}:
        assert torch.equal(new[name], old[name]), name


def test_the_head_is_the_seeded_fresh_one():
    pretrained = pretrained_model()
    model = started(DiffuserForSequenceClassification, pretrained, seed=1, pattern="Window(4)")
    torch.manual_seed(1)
    fresh = DiffuserForSequenceClassification(model.config)
    head = {n: t for n, t in model.state_dict().items() if not n.startswith("diffuser.")}
    assert head.keys() == {"dense.weight", "dense.bias", "classifier.weight", "classifier.bias"}
    for name, tensor in head.items():
        assert torch.equal(tensor, fresh.state_dict()[name]), name
        assert not torch.equal(tensor, pretrained.state_dict()[name]), name
    assert not torch.equal(
        model.diffuser.embeddings.tokens.weight, fresh.diffuser.embeddings.tokens.weight
    )


def test_same_max_len_and_pattern_give_the_pretrained_outputs_exactly():
    pretrained = pretrained_model(DiffuserForMaskedLM)
    model = started(DiffuserForSequenceClassification, pretrained)
    tokens, mask = tokens_of(8)
    mask[1, 5:] = False
    with torch.no_grad():
        assert torch.equal(model.diffuser(tokens, mask), pretrained.diffuser(tokens, mask))


@pytest.mark.parametrize("positional", ["learned", "sinusoidal", "none"])
def test_grown_positions_keep_the_outputs_of_sequences_that_fit_the_old_ones(positional):
    pretrained = pretrained_model(positional=positional)
    model = started(DiffuserForSequenceClassification, pretrained, max_len=40)
    tokens, mask = tokens_of(7)
    with torch.no_grad():
        assert torch.equal(model.diffuser(tokens, mask), pretrained.diffuser(tokens, mask))


def test_full_attention_on_a_repeated_sequence_gives_the_pretrained_outputs_repeated():
    # Tiled positions give token p and token p + 8 the same embedding when the sequence repeats
    # with period 8. Full attention then sees every key twice: each copy gets half the softmax
    # weight, so one hop, and by induction every hop of the diffusion, computes what the
    # pretrained model computes on one period. The grown positions are used, not only copied.
    pretrained = pretrained_model(pattern="Full()")
    model = started(DiffuserForSequenceClassification, pretrained, max_len=24)
    period, mask = tokens_of(8)
    tokens = period.repeat(1, 3)
    with torch.no_grad():
        expected = pretrained.diffuser(period, mask).repeat(1, 3, 1)
        torch.testing.assert_close(
            model.diffuser(tokens, mask.repeat(1, 3)), expected, rtol=0, atol=1e-5
        )


def test_a_masked_lm_encoder_under_other_heads_and_back():
    mlm = pretrained_model(DiffuserForMaskedLM)
    classifier = started(DiffuserForSequenceClassification, mlm, max_len=12)
    retrieval = started(DiffuserForRetrieval, classifier, max_len=16)
    back = started(DiffuserForMaskedLM, retrieval, max_len=8)  # positions cut to the first 8
    for name, tensor in mlm.diffuser.state_dict().items():
        assert torch.equal(back.diffuser.state_dict()[name], tensor), name
    assert not torch.equal(back.dense.weight, mlm.dense.weight)  # the MLM head is fresh too


def test_init_config_takes_the_architecture_and_the_given_fields():
    pretrained = DiffuserConfig(**PRETRAINED, dropout=0.2, hops=3)
    config = init_config(
        pretrained, max_len=64, num_classes=7, pattern="Window(4)", alpha=0.3, pooling="mean"
    )
    expected = dict(PRETRAINED, dropout=0.2, hops=3, max_len=64, num_classes=7)
    expected.update(pattern="Window(4)", alpha=0.3, pooling="mean")
    assert config == DiffuserConfig(**expected)
    # A smaller task vocabulary keeps the pretrained one; an equal architecture field is fine.
    assert init_config(pretrained, vocab_size=12, hidden=16).vocab_size == 20
    with pytest.raises(ValueError, match=r"vocab_size=21 exceeds .* vocabulary of 20 tokens"):
        init_config(pretrained, vocab_size=21)
    with pytest.raises(ValueError, match=r"unknown DiffuserConfig fields \['width'\]"):
        init_config(pretrained, width=3)


@pytest.mark.parametrize("name, value", sorted(OTHER_ARCHITECTURE.items()))
def test_init_config_refuses_another_architecture(name, value):
    assert set(OTHER_ARCHITECTURE) == set(ARCHITECTURE_FIELDS)
    pretrained = DiffuserConfig(**PRETRAINED)
    theirs = PRETRAINED.get(name, getattr(pretrained, name))
    message = f"{name}={value!r} differs from the pretrained encoder's {name}={theirs!r}"
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        init_config(pretrained, **{name: value})


def test_initialize_encoder_refuses_what_does_not_fit():
    pretrained = pretrained_model()
    config, state = encoder_of(pretrained)
    with pytest.raises(TypeError, match="model.diffuser .* got Linear"):
        initialize_encoder(nn.Linear(2, 2), config, state)
    wider = DiffuserForSequenceClassification(DiffuserConfig(**{**PRETRAINED, "ffn": 48}))
    with pytest.raises(ValueError, match="ffn=48 differs from the pretrained encoder's ffn=32"):
        initialize_encoder(wider, config, state)
    model = DiffuserForSequenceClassification(config)
    missing = {n: t for n, t in state.items() if n != "layers.1.norm2.bias"}
    with pytest.raises(ValueError, match=r"does not fit model.diffuser.*layers.1.norm2.bias"):
        initialize_encoder(model, config, missing)
    with pytest.raises(ValueError, match=r"does not fit model.diffuser.*Unexpected.*extra"):
        initialize_encoder(model, config, {**state, "extra": torch.zeros(1)})
    smaller = DiffuserForSequenceClassification(DiffuserConfig(**{**PRETRAINED, "vocab_size": 12}))
    with pytest.raises(ValueError, match=r"does not fit .*embeddings.tokens.weight"):
        initialize_encoder(smaller, config, state)
