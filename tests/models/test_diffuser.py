"""The Diffuser model against independent references: a dense SDPA transformer layer, per-sequence
runs, and the pooling definitions."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from graphdiff.data import graph_batch
from graphdiff.models import (
    Diffuser,
    DiffuserConfig,
    DiffuserForMaskedLM,
    DiffuserForSequenceClassification,
    DiffuserLayer,
    count_parameters,
    preset_config,
)

torch.manual_seed(0)


def dense_post_ln_layer(layer: DiffuserLayer, x: torch.Tensor, heads: int) -> torch.Tensor:
    """A RoBERTa layer with full softmax attention, written with scaled_dot_product_attention."""
    conv = layer.attention
    n, d = x.shape

    def split(t):  # [N, H*C] -> [H, N, C]
        return t.view(n, heads, d // heads).transpose(0, 1)

    q, k, v = split(conv.lin_query(x)), split(conv.lin_key(x)), split(conv.lin_value(x))
    attended = F.scaled_dot_product_attention(q, k, v).transpose(0, 1).reshape(n, d)
    x = layer.norm1(x + layer.output(attended))
    return layer.norm2(x + layer.ffn(x))


def test_layer_with_one_hop_on_full_pattern_is_a_dense_transformer_layer():
    config = DiffuserConfig(
        hidden=16,
        heads=4,
        ffn=32,
        hops=1,
        alpha=0.0,
        dropout=0.0,
        attention_dropout=0.0,
        pattern="Full()",
    )
    layer = DiffuserLayer(config).double().eval()
    x = torch.randn(11, 16, dtype=torch.double)
    edge_index = config.build_pattern()(11)
    torch.testing.assert_close(layer(x, edge_index), dense_post_ln_layer(layer, x, heads=4))
    layer.attention.fused = False  # PyG's gather-scatter reference path gives the same layer
    torch.testing.assert_close(layer(x, edge_index), dense_post_ln_layer(layer, x, heads=4))


def test_batch_equals_each_sequence_alone_and_padding_is_ignored():
    config = DiffuserConfig.tiny(
        vocab_size=30, pattern="Window(4) | Global(1) | Random(2)", dropout=0.0
    )
    model = Diffuser(config).eval()
    lengths = [9, 5, 7]
    tokens = torch.randint(2, 30, (3, 9))
    mask = torch.arange(9) < torch.tensor(lengths).unsqueeze(1)
    together = model(tokens, mask)
    for b, length in enumerate(lengths):
        alone = model(tokens[b : b + 1, :length], torch.ones(1, length, dtype=torch.bool))
        torch.testing.assert_close(together[b, :length], alone[0], rtol=1e-5, atol=1e-5)
    noisy = tokens.masked_fill(~mask, 17)  # other padding content changes nothing
    torch.testing.assert_close(model(noisy, mask)[mask], together[mask])
    assert torch.all(together[~mask] == 0)


def test_outputs_come_back_where_the_mask_put_each_token():
    # Left padding and a gap: token values must land at their own positions, zeros elsewhere.
    config = DiffuserConfig.tiny(vocab_size=30, pattern="Window(4) | Global(1)", dropout=0.0)
    encoder, lm = Diffuser(config).eval(), DiffuserForMaskedLM(config).eval()
    tokens = torch.randint(2, 30, (2, 8))
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1], [1, 1, 0, 1, 1, 0, 0, 0]], dtype=torch.bool)
    for model in (encoder, lm):
        out = model(tokens, mask)
        # Hugging Face's attention_mask: 0/1 numbers, as the boolean mask; other values refused
        torch.testing.assert_close(model(tokens, mask.long()), out)
        with pytest.raises(ValueError, match="only 0 and 1"):
            model(tokens, mask.long() * 2)
        for b in range(2):
            alone = model(
                tokens[b, mask[b]].unsqueeze(0), torch.ones(1, int(mask[b].sum()), dtype=torch.bool)
            )
            torch.testing.assert_close(out[b, mask[b]], alone[0], rtol=1e-5, atol=1e-5)
        assert torch.all(out[~mask] == 0)
    with pytest.raises(ValueError, match="only 0 and 1"):  # restoring checks the mask too
        encoder.restore_padding(torch.zeros(int(mask.sum()), 4), tokens, mask.long() * 2)


def dense_classifier(
    model: DiffuserForSequenceClassification, tokens: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The classifier of a one-hop, teleport-free model on the Full pattern, written as a plain
    dense transformer (scaled_dot_product_attention), one sequence at a time."""
    encoder, logits = model.diffuser, []
    for row, keep in zip(tokens, mask):
        ids = row[keep]
        x = encoder.embeddings.norm(
            encoder.embeddings.tokens(ids) + encoder.embeddings.positions(torch.arange(ids.numel()))
        )
        for layer in encoder.layers:
            x = dense_post_ln_layer(layer, x, heads=model.config.heads)
        pooled = x[0] if model.config.pooling == "cls" else x.mean(0)
        logits.append(model.classifier(torch.tanh(model.dense(pooled))))
    return torch.stack(logits)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classifier_on_either_entry_point_is_a_dense_transformer(pooling):
    config = DiffuserConfig.tiny(
        vocab_size=30,
        hops=1,
        alpha=0.0,
        pattern="Full()",
        dropout=0.0,
        attention_dropout=0.0,
        pooling=pooling,
        num_classes=3,
    )
    model = DiffuserForSequenceClassification(config).double().eval()
    tokens = torch.randint(2, 30, (4, 20))
    mask = torch.arange(20) < torch.tensor([20, 18, 20, 3]).unsqueeze(1)
    expected = dense_classifier(model, tokens, mask)
    torch.testing.assert_close(model(tokens, mask), expected)
    torch.testing.assert_close(model(graph_batch(tokens, mask, model.diffuser.pattern)), expected)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_pooling(pooling):
    config = DiffuserConfig.tiny(vocab_size=30, pooling=pooling, num_classes=3)
    model = DiffuserForSequenceClassification(config).eval()
    tokens = torch.randint(2, 30, (2, 12))
    mask = torch.arange(12) < torch.tensor([12, 6]).unsqueeze(1)
    states = model.diffuser(tokens, mask)  # [B, L, D], zeros at padding
    pooled = states[:, 0] if pooling == "cls" else states.sum(1) / mask.sum(1, keepdim=True)
    expected = model.classifier(torch.tanh(model.dense(pooled)))
    torch.testing.assert_close(model(tokens, mask), expected)


def test_attention_weights_are_one_hop_and_row_stochastic():
    config = DiffuserConfig.tiny(vocab_size=30)
    model = Diffuser(config).eval()
    tokens = torch.randint(2, 30, (2, 40))
    mask = torch.ones(2, 40, dtype=torch.bool)
    _, (edge_index, attentions) = model(tokens, mask, return_attention_weights=True)
    assert len(attentions) == config.layers
    for attention in attentions:
        assert attention.shape == (edge_index.size(1), config.heads)
        row_sums = torch.zeros(80, config.heads).index_add_(0, edge_index[1], attention)
        torch.testing.assert_close(row_sums, torch.ones_like(row_sums))


def test_masked_lm_head_is_tied_to_the_embeddings():
    config = DiffuserConfig.tiny(vocab_size=25, dropout=0.0)
    model = DiffuserForMaskedLM(config).eval()
    tokens = torch.randint(2, 25, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.bool)
    logits = model(tokens, mask)
    head_states = model.norm(F.gelu(model.dense(model.diffuser(tokens, mask))))
    expected = head_states @ model.diffuser.embeddings.tokens.weight.t() + model.bias
    torch.testing.assert_close(logits, expected)
    tied = model.diffuser.embeddings.tokens.weight
    assert not any(p.shape == (25, config.hidden) for p in model.parameters() if p is not tied)
    loss = F.cross_entropy(logits.view(-1, 25), tokens.view(-1))
    loss.backward()
    assert model.diffuser.embeddings.tokens.weight.grad is not None


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_masked_lm_starts_near_the_uniform_loss(preset):
    """BERT's N(0, 0.02) embeddings: the tied head's first loss is within 0.1 nats of ln V
    (PyTorch's N(0, 1) tables give several times ln V)."""
    torch.manual_seed(0)
    config = preset_config(preset, vocab_size=259, max_len=64)
    model = DiffuserForMaskedLM(config).eval()
    assert float(model.diffuser.embeddings.tokens.weight[0].abs().max()) == 0.0  # padding row
    tokens = torch.randint(2, 259, (4, 64))
    logits = model(tokens, torch.ones_like(tokens, dtype=torch.bool))
    loss = float(F.cross_entropy(logits.view(-1, 259), tokens.view(-1)))
    assert abs(loss - math.log(259)) < 0.1


def test_masked_lm_select_scores_only_the_selected_tokens():
    """Logits at selected tokens equal the full padded logits there, in labels[select] order;
    padding, graph batches, truncation and bad masks are handled."""
    config = DiffuserConfig.tiny(vocab_size=25, max_len=12)
    model = DiffuserForMaskedLM(config).eval()
    tokens = torch.randint(2, 25, (3, 14))
    mask = torch.arange(14) < torch.tensor([14, 9, 5])[:, None]
    select = (torch.rand(3, 14) < 0.4) & mask
    full = model(tokens, mask, truncate=True)  # [3, 12, V]
    cut = select[:, :12]
    torch.testing.assert_close(model(tokens, mask, truncate=True, select=select), full[cut])
    numbers = model(tokens, mask.long(), truncate=True, select=select)  # HF's attention_mask
    torch.testing.assert_close(numbers, full[cut])
    batch = model.diffuser.to_batch(tokens, mask, truncate=True)
    torch.testing.assert_close(model(batch, select=cut[mask[:, :12]]), full[cut])
    with pytest.raises(ValueError, match="padding positions"):
        model(tokens[:, :12], mask[:, :12], select=~mask[:, :12])
    with pytest.raises(TypeError, match="boolean"):
        model(tokens[:, :12], mask[:, :12], select=mask[:, :12].long())
    with pytest.raises(ValueError, match="tokens' shape"):
        model(tokens[:, :12], mask[:, :12], select=mask[:, :11])


def test_max_len_is_enforced_unless_truncation_is_asked_for():
    config = DiffuserConfig.tiny(vocab_size=30, max_len=16)
    model = DiffuserForSequenceClassification(config).eval()
    tokens, mask = torch.randint(2, 30, (2, 20)), torch.ones(2, 20, dtype=torch.bool)
    with pytest.raises(
        ValueError, match="sequence length 20 exceeds max_len=16; pass truncate=True"
    ):
        model(tokens, mask)
    torch.testing.assert_close(
        model(tokens, mask, truncate=True), model(tokens[:, :16], mask[:, :16])
    )
    with pytest.raises(ValueError, match="needs its mask"):
        model(tokens)


def test_paper_base_is_the_official_configuration():
    config = DiffuserConfig.paper_base()
    assert (config.hidden, config.layers, config.heads, config.ffn) == (768, 12, 12, 3072)
    assert (config.hops, config.alpha, config.dropout) == (5, 0.1, 0.1)
    assert config.build_pattern() == preset_config("tiny", pattern="diffuser()").build_pattern()
    model = Diffuser(config)
    # RoBERTa-base: 12 x 7.08M layer parameters plus token and 4096 position embeddings.
    per_layer = 4 * (768 * 768 + 768) + 2 * 768 * 3072 + 3072 + 768 + 4 * 768
    expected = 12 * per_layer + (50265 + 4096) * 768 + 2 * 768
    assert count_parameters(model) == expected


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(hidden=30, heads=4), "divisible by heads"),
        (dict(pooling="max"), "pooling must be one of"),
        (dict(positional="rope"), "positional must be one of"),
        (dict(layers=0), "layers must be a positive integer"),
        (dict(dropout=1.0), "dropout must lie in"),
        (dict(pattern="Window(8) | Nope(1)"), "unknown name 'Nope'"),
        (dict(kernel="foo"), "'kernel' must be one of"),
        (dict(alpha=5.0), "'alpha' must be a float in"),
        (dict(alpha="0.1"), "'alpha' must be a float in"),
        (dict(hops=-1), "'hops' must be >= 0"),
        (dict(t=-1.0), "'t' must be a finite float >= 0"),
        (dict(layer_norm_eps=-1.0), "layer_norm_eps must be a number > 0"),
        (dict(dropout="0.1"), "dropout must lie in"),
        (dict(attention_dropout=None), "attention_dropout must lie in"),
        (dict(hop_dropout=True), "hop_dropout must lie in"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiffuserConfig(**kwargs)


def test_config_takes_numpy_scalars_as_python_numbers():
    # A sweep's np.int64 / np.float32 values: accepted as the layer accepts them, and stored as
    # int / float, since config.json cannot hold NumPy scalars.
    config = DiffuserConfig(
        hidden=np.int64(64),
        hops=np.int64(3),
        alpha=np.float32(0.25),
        dropout=np.float32(0.5),
        t=np.float64(2.0),
    )
    assert json.loads(json.dumps(config.to_dict())) == config.to_dict()
    assert (type(config.hidden), type(config.hops), type(config.alpha)) == (int, int, float)
    assert (config.hops, config.alpha, config.dropout) == (3, 0.25, 0.5)


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(
        ValueError, match="unknown preset 'huge'; valid presets: tiny, small, paper_base"
    ):
        preset_config("huge")
    config = DiffuserConfig.small()
    assert DiffuserConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown DiffuserConfig fields"):
        DiffuserConfig.from_dict({"hiden": 3})


@pytest.mark.parametrize("positional", ["learned", "sinusoidal", "none"])
def test_positional_encodings_make_positions_distinguishable(positional):
    config = DiffuserConfig.tiny(
        vocab_size=10, positional=positional, dropout=0.0, pattern="Full()"
    )
    model = Diffuser(config).eval()
    tokens = torch.full((1, 6), 3)
    states = model(tokens, torch.ones(1, 6, dtype=torch.bool))[0]
    same = torch.allclose(states[0], states[3], atol=1e-6)
    assert same == (positional == "none")


def test_every_layer_gets_the_one_structure_of_the_batch(fresh_cache):
    from graphdiff.nn import DiffusionGraph

    config = DiffuserConfig.tiny(vocab_size=30, layers=3)
    model = Diffuser(config).eval()
    seen = []
    for layer in model.layers:
        layer.attention.register_forward_pre_hook(lambda _, args: seen.append(args[1]))
    tokens, mask = torch.randint(2, 30, (2, 24)), torch.ones(2, 24, dtype=torch.bool)
    graphs = []
    for _ in range(4):  # equal lengths: from the third batch on, the cached structure
        seen.clear()
        model(tokens, mask)
        assert len(seen) == 3 and isinstance(seen[0], DiffusionGraph)
        assert all(graph is seen[0] for graph in seen)
        graphs.append(seen[0])
    assert graphs[0] is not graphs[1] and graphs[2] is graphs[3]


def test_a_stream_of_random_lengths_keeps_no_batch_and_the_budget_holds(fresh_cache):
    config = DiffuserConfig.tiny(vocab_size=30, pattern="Window(4) | Global(1) | Random(2)")
    model = DiffuserForSequenceClassification(config)
    gen = torch.Generator().manual_seed(0)

    def step(lengths):
        tokens = torch.randint(2, 30, (len(lengths), max(lengths)), generator=gen)
        mask = torch.arange(max(lengths)) < torch.tensor(lengths).unsqueeze(1)
        model(tokens, mask).sum().backward()

    step([30, 30])  # a structure and its transpose, batched edges: asked for once, not kept
    step([30, 30])
    step([30, 30])  # now kept: the lengths came back
    kept = {key[0] for key in fresh_cache.entries}
    assert kept == {"pattern", "batched", "structure"}
    fresh_cache.set_budget(fresh_cache.bytes + 4096)  # room for the per-length patterns only
    before = fresh_cache.bytes
    for _ in range(20):  # new lengths every time: only their per-length patterns are kept
        step(torch.randint(5, 60, (3,), generator=gen).tolist())
        assert fresh_cache.bytes <= fresh_cache.max_bytes
    assert not any(key[0] == "batched" and key[2] != (30, 30) for key in fresh_cache.entries)
    assert fresh_cache.bytes <= before + 4096
    fresh_cache.set_budget(1000)
    assert fresh_cache.bytes <= 1000


@pytest.mark.parametrize(
    "tokens, error, match",
    [
        (
            torch.tensor([[1, 2, 40]]),
            ValueError,
            r"token ids must lie in \[0, vocab_size\) = \[0, 32\)",
        ),
        (torch.tensor([[1, -2, 3]]), ValueError, "token ids must lie in"),
        (torch.tensor([[1.0, 2.0, 3.0]]), TypeError, "tokens must be integer ids"),
    ],
)
def test_bad_token_ids_are_named_before_the_embedding(tokens, error, match):
    model = Diffuser(DiffuserConfig.tiny(vocab_size=32))
    with pytest.raises(error, match=match):
        model(tokens, torch.ones(tokens.shape, dtype=torch.bool))


def saved_bytes(run) -> int:
    """Bytes of the tensors autograd saves for backward while ``run()`` builds its graph."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = run()
    return out, total


def test_gradient_checkpointing_gives_the_same_gradients_and_saves_less():
    # Every dropout on, so that exact equality needs the recomputation to redraw the same masks.
    config = DiffuserConfig.tiny(
        vocab_size=40, layers=3, dropout=0.2, attention_dropout=0.2, hop_dropout=0.2
    )
    tokens = torch.randint(1, 40, (3, 50), generator=torch.Generator().manual_seed(1))
    mask = torch.arange(50) < torch.tensor([[50], [31], [7]])
    labels = torch.tensor([0, 1, 1])
    grads, saved = [], []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = DiffuserForSequenceClassification(
            DiffuserConfig(**{**config.to_dict(), "gradient_checkpointing": checkpointing})
        ).train()
        torch.manual_seed(5)
        logits, size = saved_bytes(lambda: model(tokens, mask))
        F.cross_entropy(logits, labels).backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
        saved.append(size)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.equal(grads[0][name], grads[1][name]), name
    assert saved[1] < saved[0] / 2  # three layers' activations against one layer's inputs


def test_gradient_checkpointing_must_be_a_bool():
    with pytest.raises(TypeError, match="gradient_checkpointing must be a bool"):
        DiffuserConfig(gradient_checkpointing=1)


def test_bf16_autocast_gradients_match_float32_within_bf16_tolerance():
    config = DiffuserConfig.tiny(vocab_size=40, dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(0)
    model = DiffuserForSequenceClassification(config).train()
    tokens = torch.randint(1, 40, (3, 50), generator=torch.Generator().manual_seed(1))
    mask = torch.arange(50) < torch.tensor([[50], [31], [7]])
    labels = torch.tensor([0, 1, 1])
    grads = []
    for bf16 in (False, True):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(tokens, mask)
            assert logits.dtype == (torch.bfloat16 if bf16 else torch.float32)
            F.cross_entropy(logits, labels).backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    # bf16 keeps 8 bits of mantissa; the absolute term covers gradients that are zero in exact
    # arithmetic (the key bias: softmax does not see a shift shared by a query's scores).
    scale = max(exact.norm() for exact in grads[0].values())
    for name, exact in grads[0].items():
        assert grads[1][name].dtype == torch.float32  # autocast keeps fp32 weights and grads
        error = (grads[1][name] - exact).norm()
        assert error <= 0.05 * exact.norm() + 1e-3 * scale, name
