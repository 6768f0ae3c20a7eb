"""save_pretrained / from_pretrained: a saved model loads with the same weights, configuration and
outputs; the weights file is plain safetensors; bad directories get clear errors."""

import json
import os
import struct

import pytest
import torch

from graphdiff.models import (
    Diffuser,
    DiffuserConfig,
    DiffuserForMaskedLM,
    DiffuserForSequenceClassification,
)

MODELS = (Diffuser, DiffuserForSequenceClassification, DiffuserForMaskedLM)
CONFIG = dict(
    vocab_size=20,
    hidden=16,
    heads=2,
    ffn=32,
    layers=2,
    max_len=12,
    num_classes=3,
    pad_token_id=1,
    pattern="diffuser(window=2, num_global=1, num_random=2)",
)


def build(cls):
    torch.manual_seed(0)
    model = cls(DiffuserConfig(**CONFIG)).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # the masked-LM bias and the norms start constant
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def inputs():
    tokens = torch.randint(2, 20, (2, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 7:] = False
    return tokens, mask


def read_safetensors_header(path):
    """The JSON header of a safetensors file (8-byte little-endian length, then the JSON)."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(length))


@pytest.mark.parametrize("cls", MODELS)
def test_saved_model_loads_with_the_same_weights_and_outputs(cls, tmp_path):
    model = build(cls)
    model.save_pretrained(tmp_path / "saved")
    assert sorted(os.listdir(tmp_path / "saved")) == ["config.json", "model.safetensors"]
    loaded = cls.from_pretrained(tmp_path / "saved")
    assert type(loaded) is cls and not loaded.training and loaded.config == model.config
    saved_state, loaded_state = model.state_dict(), loaded.state_dict()
    assert saved_state.keys() == loaded_state.keys()
    assert all(torch.equal(saved_state[name], loaded_state[name]) for name in saved_state)
    with torch.no_grad():
        assert torch.equal(loaded(*inputs()), model(*inputs()))


def test_files_are_the_configuration_and_plain_safetensors(tmp_path):
    model = build(DiffuserForMaskedLM)
    model.save_pretrained(tmp_path)
    values = json.loads((tmp_path / "config.json").read_text())
    assert values.pop("model_class") == "DiffuserForMaskedLM"
    assert values.pop("graphdiff_version")
    assert values == model.config.to_dict()
    header = read_safetensors_header(tmp_path / "model.safetensors")
    assert header.pop("__metadata__") == {"format": "pt"}
    # One tensor per weight: the decoder is the token embedding, stored once.
    assert header.keys() == model.state_dict().keys()
    assert header["diffuser.embeddings.tokens.weight"]["shape"] == [20, 16]
    assert all(entry["dtype"] == "F32" for entry in header.values())


def test_saving_again_replaces_the_files(tmp_path):
    build(Diffuser).save_pretrained(tmp_path)
    model = build(DiffuserForSequenceClassification)
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]  # no temporaries
    with torch.no_grad():
        loaded = DiffuserForSequenceClassification.from_pretrained(tmp_path)
        assert torch.equal(loaded(*inputs()), model(*inputs()))


@pytest.mark.parametrize("head", [DiffuserForSequenceClassification, DiffuserForMaskedLM])
def test_encoder_loads_from_a_task_model_directory(head, tmp_path):
    model = build(head)
    model.save_pretrained(tmp_path)
    encoder = Diffuser.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(encoder(*inputs()), model.diffuser(*inputs()))


@pytest.mark.parametrize(
    "saved, loader",
    [
        (DiffuserForMaskedLM, DiffuserForSequenceClassification),
        (DiffuserForSequenceClassification, DiffuserForMaskedLM),
        (Diffuser, DiffuserForMaskedLM),
    ],
)
def test_a_task_model_loads_only_its_own_class(saved, loader, tmp_path):
    build(saved).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"holds a {saved.__name__}, not a {loader.__name__}"):
        loader.from_pretrained(tmp_path)


def test_overrides_change_what_the_weights_leave_free(tmp_path):
    model = build(DiffuserForSequenceClassification)
    model.save_pretrained(tmp_path)
    loaded = DiffuserForSequenceClassification.from_pretrained(
        tmp_path, pattern="Full()", hops=1, alpha=0.0, dropout=0.0
    )
    assert (loaded.config.pattern, loaded.config.hops, loaded.config.dropout) == ("Full()", 1, 0.0)
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values())
    )
    with pytest.raises(ValueError, match=r"\['max_len'\] are fixed by the weights"):
        Diffuser.from_pretrained(tmp_path, max_len=24)
    with pytest.raises(ValueError, match=r"unknown DiffuserConfig fields \['windows'\]"):
        Diffuser.from_pretrained(tmp_path, windows=3)


def test_missing_directory_or_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model directory at .*nowhere"):
        Diffuser.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="config.json' is missing"):
        Diffuser.from_pretrained(tmp_path)
    build(Diffuser).save_pretrained(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}.*model.safetensors' is missing"):
        Diffuser.from_pretrained(tmp_path)


def test_foreign_or_broken_files_are_refused(tmp_path):
    build(Diffuser).save_pretrained(tmp_path)
    config_path = tmp_path / "config.json"
    values = json.loads(config_path.read_text())

    config_path.write_text(json.dumps({"model_type": "roberta", "hidden_size": 16}))
    with pytest.raises(ValueError, match="no 'model_class'.*from_roberta"):
        Diffuser.from_pretrained(tmp_path)
    config_path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Diffuser.from_pretrained(tmp_path)
    config_path.write_text(json.dumps({**values, "hidden": 32, "heads": 4}))
    with pytest.raises(ValueError, match="do not fit its configuration"):
        Diffuser.from_pretrained(tmp_path)
    config_path.write_text(json.dumps(values))
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        Diffuser.from_pretrained(tmp_path)
