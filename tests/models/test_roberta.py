"""from_roberta against Hugging Face's own RoBERTa: small random models built from a config (no
download), compared on the real tokens of padded batches."""

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import (
    BertConfig,
    BertModel,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaForSequenceClassification,
    RobertaModel,
)

from graphdiff.models import (
    Diffuser,
    DiffuserConfig,
    DiffuserForMaskedLM,
    DiffuserForSequenceClassification,
    from_roberta,
)

HF_CONFIG = dict(
    vocab_size=40,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=24,
    layer_norm_eps=1e-5,
    num_labels=3,
    hidden_dropout_prob=0.2,
    attention_probs_dropout_prob=0.3,
)
PAD, CLS = 1, 0  # RoBERTa's ids
PRETRAINED_LEN = 24 - PAD - 1  # positions after RoBERTa's offset
EXACT = dict(pattern="Full()", hops=1, alpha=0.0)  # one hop of dense attention: RoBERTa's layer
CONVERTED = {
    RobertaModel: Diffuser,
    RobertaForMaskedLM: DiffuserForMaskedLM,
    RobertaForSequenceClassification: DiffuserForSequenceClassification,
}


def roberta(cls=RobertaModel, **changes):
    torch.manual_seed(0)
    model = cls(RobertaConfig(**{**HF_CONFIG, **changes})).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # far from the init's small values: every weight shows
            parameter.normal_(0.0, 0.3)
    return model


def padded(lengths, width, left=False, seed=0):
    """Token ids ``[B, width]`` (CLS first, PAD around) and the mask of the real tokens."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), width), PAD)
    mask = torch.zeros(len(lengths), width, dtype=torch.bool)
    for row, length in enumerate(lengths):
        tokens = torch.randint(3, HF_CONFIG["vocab_size"], (length,), generator=generator)
        tokens[0] = CLS
        columns = slice(width - length, width) if left else slice(0, length)
        ids[row, columns], mask[row, columns] = tokens, True
    return ids, mask


def hf_output(model, ids, mask):
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask.long())
    return out.last_hidden_state if isinstance(model, RobertaModel) else out.logits


def assert_matches(converted, model, ids, mask):
    with torch.no_grad():
        got = converted(ids, mask)
    expected = hf_output(model, ids, mask)
    if expected.dim() == 3:  # per token: compare the real ones (HF computes padding too)
        got, expected = got[mask], expected[mask]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls", list(CONVERTED))
def test_converted_model_computes_what_roberta_computes(cls):
    model = roberta(cls)
    converted = from_roberta(model, **EXACT)
    assert type(converted) is CONVERTED[cls] and not converted.training
    assert_matches(converted, model, *padded([9, 13, 1, 4], width=13))


@pytest.mark.parametrize("cls", [RobertaModel, RobertaForMaskedLM])
def test_left_padding_matches_too(cls):
    """RoBERTa numbers positions from the first real token, as graphdiff does."""
    model = roberta(cls)
    assert_matches(from_roberta(model, **EXACT), model, *padded([5, 11, 2], width=11, left=True))


@functools.lru_cache(maxsize=None)
def exact_pair():
    """A RoBERTa and its exact conversion, built once for the property test's examples."""
    model = roberta()
    return model, from_roberta(model, **EXACT)


@settings(max_examples=15, deadline=None)
@given(
    lengths=st.lists(st.integers(1, PRETRAINED_LEN), min_size=1, max_size=3),
    left=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_any_padded_batch_matches(lengths, left, seed):
    model, converted = exact_pair()
    assert_matches(converted, model, *padded(lengths, max(lengths), left, seed))


def test_configuration_comes_from_the_checkpoint_and_the_diffusion_from_paper_base():
    model = roberta(RobertaForSequenceClassification).train()
    converted = from_roberta(model)
    paper = DiffuserConfig.paper_base()
    expected = dict(
        vocab_size=40,
        hidden=32,
        layers=2,
        heads=4,
        ffn=64,
        layer_norm_eps=1e-5,
        pad_token_id=PAD,
        max_len=PRETRAINED_LEN,
        num_classes=3,
        dropout=0.2,
        attention_dropout=0.3,
        hops=paper.hops,
        alpha=paper.alpha,
        pattern=paper.pattern,
        positional="learned",
    )
    assert {name: getattr(converted.config, name) for name in expected} == expected
    assert converted.training


def test_padding_embedding_is_roberta_pad_not_its_cls():
    """graphdiff's default padding id 0 is RoBERTa's CLS: that row must keep training."""
    converted = from_roberta(roberta(), **EXACT)
    converted(*padded([6, 3], width=6)).sum().backward()
    gradient = converted.embeddings.tokens.weight.grad
    assert gradient[CLS].abs().sum() > 0 and gradient[PAD].abs().sum() == 0
    with pytest.raises(ValueError, match="pad_token_id"):
        DiffuserConfig(vocab_size=32, pad_token_id=32)


def test_longer_max_len_tiles_the_pretrained_positions():
    model = roberta()
    max_len = 2 * PRETRAINED_LEN + 5
    converted = from_roberta(model, max_len=max_len, **EXACT)
    # Each position p embeds as RoBERTa's position (p mod 22) + offset, with token type 0.
    hf = model.embeddings
    tokens = torch.randint(3, HF_CONFIG["vocab_size"], (max_len,))
    pos = torch.arange(max_len)
    with torch.no_grad():
        expected = hf.LayerNorm(
            hf.word_embeddings(tokens)
            + hf.token_type_embeddings.weight[0]
            + hf.position_embeddings(pos % PRETRAINED_LEN + PAD + 1)
        )
        torch.testing.assert_close(converted.embeddings(tokens, pos), expected, atol=1e-6, rtol=0)
    assert converted(*padded([max_len], width=max_len)).shape == (1, max_len, 32)
    assert_matches(converted, model, *padded([PRETRAINED_LEN, 7], width=PRETRAINED_LEN))


def test_shorter_max_len_keeps_the_first_positions():
    model = roberta()
    converted = from_roberta(model, max_len=10, **EXACT)
    assert converted.embeddings.positions.weight.shape == (10, 32)
    assert_matches(converted, model, *padded([10, 4], width=10))


def test_converted_model_saved_and_loaded_still_matches(tmp_path):
    model = roberta(RobertaForMaskedLM)
    from_roberta(model, **EXACT).save_pretrained(tmp_path)
    assert_matches(DiffuserForMaskedLM.from_pretrained(tmp_path), model, *padded([8, 3], width=8))


def test_other_architectures_are_refused():
    bert = BertModel(
        BertConfig(
            vocab_size=40,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=64,
        )
    )
    for wrong in (bert, object(), roberta().encoder):
        with pytest.raises(
            TypeError, match="RobertaModel, RobertaForMaskedLM or RobertaForSequenceClassification"
        ):
            from_roberta(wrong)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(hidden_act="gelu_new"), "hidden_act='gelu'"),
        (dict(hidden_act="relu"), "hidden_act='gelu'"),
        (dict(position_embedding_type="relative_key"), "position_embedding_type='absolute'"),
        (dict(is_decoder=True), "is_decoder=False"),
        (dict(pad_token_id=23, max_position_embeddings=24), "leaves no position"),
    ],
)
def test_incompatible_configurations_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        from_roberta(roberta(**change))


def test_untied_decoder_is_refused():
    model = roberta(RobertaForMaskedLM, tie_word_embeddings=False)
    assert model.lm_head.decoder.weight is not model.roberta.embeddings.word_embeddings.weight
    with pytest.raises(ValueError, match="tied"):
        from_roberta(model)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(hidden=64), r"\['hidden'\] are fixed by the weights of the RobertaModel"),
        (dict(num_classes=5, vocab_size=3), r"\['num_classes', 'vocab_size'\] are fixed"),
        (dict(positional="sinusoidal"), "fixed"),
        (dict(window=64), r"unknown DiffuserConfig fields \['window'\]"),
    ],
)
def test_overrides_the_checkpoint_fixes_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        from_roberta(roberta(), **overrides)
