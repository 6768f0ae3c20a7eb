"""DiffuserForRetrieval: the two-tower model equals each document encoded alone by its encoder,
then LRA's dual classifier head applied by hand; it saves, loads and trains its shared encoder."""

import pytest
import torch
import torch.nn.functional as F

from graphdiff.models import Diffuser, DiffuserConfig, DiffuserForRetrieval

CONFIG = dict(
    vocab_size=20,
    hidden=16,
    heads=2,
    ffn=12,
    layers=2,
    max_len=14,
    num_classes=2,
    pattern="diffuser(window=2, num_global=1, num_random=2)",
)


def build(**overrides):
    torch.manual_seed(0)
    model = DiffuserForRetrieval(DiffuserConfig(**{**CONFIG, **overrides})).eval()
    with torch.no_grad():  # the norms start constant: move every parameter off its init
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def documents(lengths, width, seed, left_padded=True):
    """Padded token ids [B, width] and a mask with the given numbers of real tokens; the second
    row is left-padded unless ``left_padded=False``, so the mask's layout matters."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, 20, (len(lengths), width), generator=generator)
    mask = torch.zeros(len(lengths), width, dtype=torch.bool)
    for row, length in enumerate(lengths):
        if row == 1 and left_padded:
            mask[row, width - length :] = True
        else:
            mask[row, :length] = True
    return tokens, mask


A = documents([5, 9, 3], 9, seed=1)
B = documents([12, 2, 7], 12, seed=2, left_padded=False)


def pooled_alone(model, tokens, mask):
    """[B, D]: each document encoded on its own (its real tokens only, no padding), pooled."""
    vectors = []
    for row in range(tokens.size(0)):
        real = tokens[row, mask[row]][None, : model.config.max_len]
        states = model.diffuser(real, torch.ones_like(real, dtype=torch.bool))[0]
        vectors.append(states[0] if model.config.pooling == "cls" else states.mean(0))
    return torch.stack(vectors)


def head_by_hand(model, u, v):
    """LRA's classifier_head_dual with the NLI interaction, written out from the weights."""
    features = torch.cat([u, v, u * v, u - v], dim=1)
    hidden = torch.relu(features @ model.mlp.weight.T + model.mlp.bias)
    hidden = torch.relu(hidden @ model.mlp2.weight.T + model.mlp2.bias)
    return hidden @ model.classifier.weight.T + model.classifier.bias


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_logits_equal_each_document_encoded_alone(pooling):
    model = build(pooling=pooling)
    with torch.no_grad():
        logits = model(*A, *B)
        expected = head_by_hand(model, pooled_alone(model, *A), pooled_alone(model, *B))
    assert logits.shape == (3, 2)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # Hugging Face's 0/1 attention_mask reads as the boolean one
        as_numbers = model(A[0], A[1].long(), B[0], B[1].float())
    torch.testing.assert_close(as_numbers, logits)


def test_head_shapes_follow_lra():
    model = build()
    # [u, v, u * v, u - v] is 4D wide; then mlp_dim = ffn, ffn // 2, num_classes.
    assert model.mlp.weight.shape == (12, 64)
    assert model.mlp2.weight.shape == (6, 12)
    assert model.classifier.weight.shape == (2, 6)


def test_swapped_documents_swap_the_towers():
    model = build()
    with torch.no_grad():
        u, v = pooled_alone(model, *A), pooled_alone(model, *B)
        swapped = model(*B, *A)
        same = model(*A, *A)
        torch.testing.assert_close(swapped, head_by_hand(model, v, u), atol=1e-5, rtol=1e-5)
        # A pair of identical documents: u - v is exactly zero, the other parts coincide.
        torch.testing.assert_close(same, head_by_hand(model, u, u), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(swapped, model(*A, *B), atol=1e-4)


def test_truncate_cuts_long_documents_to_max_len():
    model = build(max_len=8)
    with pytest.raises(ValueError, match="exceeds max_len=8"):
        model(*A, *B)
    with torch.no_grad():
        logits = model(*A, *B, truncate=True)
        # Padded to one width first, then cut: each document keeps its first max_len columns.
        cut_a = (A[0][:, :8], A[1][:, :8])
        cut_b = (B[0][:, :8], B[1][:, :8])
        assert cut_a[1].sum(1).min() > 0 and cut_b[1].sum(1).min() > 0
        expected = head_by_hand(model, pooled_alone(model, *cut_a), pooled_alone(model, *cut_b))
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_gradients_reach_the_shared_encoder_from_both_towers():
    model = build()
    labels = torch.tensor([0, 1, 1])
    F.cross_entropy(model(*A, *B), labels).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    reference = head_by_hand(model, pooled_alone(model, *A), pooled_alone(model, *B))
    F.cross_entropy(reference, labels).backward()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(grads[name], parameter.grad, atol=1e-5, rtol=1e-4, msg=name)
    encoder = {name: g for name, g in grads.items() if name.startswith("diffuser.layers.")}
    assert encoder and all(g.abs().sum() > 0 for g in encoder.values())


def test_save_and_load_round_trip(tmp_path):
    model = build(pooling="mean")
    model.save_pretrained(tmp_path / "saved")
    loaded = DiffuserForRetrieval.from_pretrained(tmp_path / "saved")
    assert loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded(*A, *B), model(*A, *B), atol=0, rtol=0)
    # The encoder is stored under "diffuser.", so a bare Diffuser loads it from the directory.
    encoder = Diffuser.from_pretrained(tmp_path / "saved")
    for name, tensor in model.diffuser.state_dict().items():
        assert torch.equal(encoder.state_dict()[name], tensor), name


def test_bad_inputs_name_the_problem():
    model = build()
    with pytest.raises(ValueError, match="same number of documents, got 3 and 2"):
        model(*A, B[0][:2], B[1][:2])
    with pytest.raises(ValueError, match=r"tokens_b and mask_b must both be \[B, L\]"):
        model(*A, B[0], B[1][:, :5])
    with pytest.raises(ValueError, match="only 0 and 1"):
        model(*A, B[0], B[1].long() * 3)
    with pytest.raises(TypeError, match="tokens_a and mask_a must be tensors"):
        model(A[0].tolist(), A[1], *B)
    with pytest.raises(ValueError, match="needs config.ffn >= 2"):
        DiffuserForRetrieval(DiffuserConfig(**{**CONFIG, "ffn": 1}))
