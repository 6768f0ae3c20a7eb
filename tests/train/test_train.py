"""Training: exact resumption, atomic and safe checkpoints, evaluation and bad input."""
import json
import os

import pytest
import torch

from graphdiff.cli import main
from graphdiff.train import CheckpointError, TrainArgs, load_checkpoint, load_model, save_checkpoint, train
from graphdiff.train.evaluation import evaluate_checkpoint

TASK_ARGS = {"num_samples": 32, "length": 32}
MODEL_ARGS = {"hidden": 16, "ffn": 32, "heads": 2}


def quick_args(out, **overrides):
    values = dict(task="multihop", preset="tiny", out=str(out), pattern="Window(8)", max_steps=7, batch_size=8,
                  eval_every=3, log_every=1, task_args=TASK_ARGS, model_args=MODEL_ARGS, progress=False)
    return TrainArgs(**{**values, **overrides})


def losses(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        return [(r["step"], r["loss"]) for r in map(json.loads, handle) if "loss" in r]


def test_resume_continues_exactly(tmp_path):
    # 4 steps per epoch: the interruption at step 5 lands mid-epoch, after an epoch boundary.
    whole = train(quick_args(tmp_path / "whole"))
    train(quick_args(tmp_path / "split", stop_after=5))
    assert [step for step, _ in losses(tmp_path / "split")] == [1, 2, 3, 4, 5]
    resumed = train(quick_args(tmp_path / "split", resume=True))
    assert losses(tmp_path / "split") == losses(tmp_path / "whole")  # bit for bit, dropout included
    for name, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    state = load_checkpoint(str(tmp_path / "split" / "last.pt"))
    assert state["step"] == 7
    config = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert config["model"]["pattern"] == "Window(8)" and config["train"]["max_steps"] == 7


def test_checkpoints_are_atomic_and_corruption_is_reported(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pt")
    save_checkpoint(path, {"model": {}, "config": {}, "step": 1})

    def crash(obj, handle):  # dies half-way through writing
        handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"model": {}, "config": {}, "step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1  # the previous checkpoint is intact
    assert os.listdir(tmp_path) == ["last.pt"]  # and no temporary file is left behind

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(open(path, "rb").read()[:40])
    with pytest.raises(CheckpointError, match="truncated.pt is corrupt or truncated"):
        load_checkpoint(str(truncated))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    torch.save({"weights": torch.ones(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a graphdiff checkpoint"):
        load_checkpoint(str(tmp_path / "foreign.pt"))


def test_best_checkpoint_evaluates_from_the_command_line(tmp_path, capsys):
    result = train(quick_args(tmp_path, max_steps=4, eval_every=2))
    assert result.metrics["val_examples"] == 32
    model, config = load_model(str(tmp_path / "best.pt"))
    assert config.pattern == "Window(8)" and not model.training
    assert main(["evaluate", "--checkpoint", str(tmp_path / "last.pt"), "--split", "val"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["examples"] == 32 and line["loss"] == pytest.approx(result.metrics["val_loss"], rel=1e-5)
    assert line["accuracy"] == pytest.approx(result.metrics["val_accuracy"])
    assert evaluate_checkpoint(str(tmp_path / "last.pt"), split="test")["examples"] == 32


@pytest.mark.parametrize("argv, message", [
    (["train", "--task", "sudoku", "--max-steps", "1", "--out", "x"], "unknown task 'sudoku'; valid tasks: image, listops, multihop"),
    (["train", "--task", "multihop", "--preset", "huge", "--max-steps", "1", "--out", "x",
      "--task-arg", "num_samples=8"], "unknown preset 'huge'; valid presets: tiny, small, paper_base"),
    (["train", "--task", "multihop", "--pattern", "Windw(8)", "--max-steps", "1", "--out", "x",
      "--task-arg", "num_samples=8"], "unknown name 'Windw'"),
    (["evaluate", "--checkpoint", "nowhere.pt"], "nowhere.pt does not exist"),
])
def test_bad_input_is_a_clear_error(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_train_args_validation():
    with pytest.raises(ValueError, match="exactly one of max_steps and epochs"):
        TrainArgs(max_steps=3, epochs=1.0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        TrainArgs(max_steps=3, batch_size=0)


def test_listops_checkpoint_evaluates_on_an_lra_tsv_file(tmp_path, capsys):
    from graphdiff.data.tasks import ListOps
    from graphdiff.data.tasks.listops import evaluate as listops_value, write_listops_tsv

    generator_args = {"num_samples": 16, "min_length": 10, "max_length": 60, "max_depth": 3}
    train(quick_args(tmp_path / "run", task="listops", pattern=None, max_steps=2, task_args=generator_args))
    trees = [ListOps("test", seed=5, **generator_args).tree(i) for i in range(5)]
    tsv = tmp_path / "basic_test.tsv"
    write_listops_tsv(tsv, trees)
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--data", str(tsv)]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["examples"] == 5 and 0.0 <= line["accuracy"] <= 1.0
    # The same numbers as evaluating the decoded examples directly.
    model, _ = load_model(str(tmp_path / "run" / "last.pt"))
    from graphdiff.data.tasks import ListOpsTSV, collate
    tokens, mask, labels = collate([ListOpsTSV("test", tsv)[i] for i in range(5)])
    assert labels.tolist() == [listops_value(tree) for tree in trees]
    logits = model(tokens, mask)
    assert line["accuracy"] == pytest.approx(float((logits.argmax(-1) == labels).float().mean()))
