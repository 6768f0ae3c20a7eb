"""load_encoder: the encoder of a training checkpoint, a run folder or a save_pretrained
directory, and a clear error for anything else."""

import os

import pytest
import torch

from graphdiff.models import Diffuser, DiffuserConfig, DiffuserForMaskedLM
from graphdiff.train import CheckpointError, load_encoder, save_checkpoint

CONFIG = DiffuserConfig(vocab_size=20, hidden=16, heads=2, ffn=32, layers=1, max_len=8)


def masked_lm():
    torch.manual_seed(0)
    return DiffuserForMaskedLM(CONFIG)


def assert_encoder(loaded, model):
    config, state = loaded
    assert config == CONFIG
    expected = model.diffuser.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[name], expected[name]) for name in expected)


def test_from_a_checkpoint_and_a_run_folder(tmp_path):
    model = masked_lm()
    state = {"model": model.state_dict(), "config": CONFIG.to_dict(), "step": 3}
    save_checkpoint(str(tmp_path / "best.pt"), state)
    assert_encoder(load_encoder(tmp_path / "best.pt"), model)
    assert_encoder(load_encoder(tmp_path), model)  # the run folder's best.pt


@pytest.mark.parametrize("saved", ["task", "encoder"])
def test_from_a_save_pretrained_directory(saved, tmp_path):
    model = masked_lm()
    (model if saved == "task" else model.diffuser).save_pretrained(tmp_path)
    assert_encoder(load_encoder(tmp_path), model)


def test_what_is_no_encoder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere does not exist; --init takes"):
        load_encoder(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="holds neither best.pt nor model.safetensors"):
        load_encoder(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a graphdiff checkpoint"):
        load_encoder(tmp_path / "notes.txt")

    Diffuser(CONFIG).save_pretrained(tmp_path / "saved")
    os.remove(tmp_path / "saved" / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="holds config.json but no model.safetensors"):
        load_encoder(tmp_path / "saved")

    head_only = {"model": {"classifier.weight": torch.zeros(2, 16)}, "config": CONFIG.to_dict()}
    save_checkpoint(str(tmp_path / "head.pt"), head_only)
    with pytest.raises(CheckpointError, match="head.pt holds no encoder"):
        load_encoder(tmp_path / "head.pt")
    save_checkpoint(str(tmp_path / "no_config.pt"), {"model": masked_lm().state_dict()})
    with pytest.raises(CheckpointError, match="missing config"):
        load_encoder(tmp_path / "no_config.pt")

    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(str(run / "last.pt"), {"model": {}, "config": CONFIG.to_dict()})
    with pytest.raises(ValueError, match=r"run folder .*run has no best.pt .*run/last.pt"):
        load_encoder(run)
