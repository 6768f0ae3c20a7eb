"""Training: exact resumption, atomic and safe checkpoints, evaluation and bad input."""

import dataclasses
import json
import os
import platform

import pytest
import torch
from torch.nn import LayerNorm

import graphdiff.train.loop
from graphdiff.cli import main
from graphdiff.models import DiffuserForSequenceClassification, preset_config
from graphdiff.train import (
    CheckpointError,
    TrainArgs,
    load_checkpoint,
    load_model,
    release_free_memory,
    save_checkpoint,
    train,
)
from graphdiff.train.checkpoint import RUN_KEYS
from graphdiff.train.evaluation import evaluate_checkpoint
from graphdiff.train.loop import make_optimizer

TASK_ARGS = {"num_samples": 32, "length": 32}
MODEL_ARGS = {"hidden": 16, "ffn": 32, "heads": 2}


def quick_args(out, **overrides):
    values = dict(
        task="multihop",
        preset="tiny",
        out=str(out),
        pattern="Window(8)",
        max_steps=7,
        batch_size=8,
        eval_every=3,
        log_every=1,
        task_args=TASK_ARGS,
        model_args=MODEL_ARGS,
        progress=False,
    )
    return TrainArgs(**{**values, **overrides})


def losses(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        return [(r["step"], r["loss"]) for r in map(json.loads, handle) if "loss" in r]


def metrics_without_timings(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        return [
            {k: v for k, v in record.items() if k != "tokens_per_second"}
            for record in map(json.loads, handle)
        ]


def test_resume_continues_exactly(tmp_path):
    # 4 steps per epoch: the interruption at step 5 lands mid-epoch, after an epoch boundary.
    whole = train(quick_args(tmp_path / "whole"))
    stopped = train(quick_args(tmp_path / "split", stop_after=5))
    assert [step for step, _ in losses(tmp_path / "split")] == [1, 2, 3, 4, 5]
    assert stopped.metrics == {"step": 5, "epoch": 1.25, "stopped": True}  # not step 3's evaluation
    resumed = train(quick_args(tmp_path / "split", resume=True))
    # Bit for bit, dropout included, and the evaluations too: the stop adds none, and the
    # training-loss window of the evaluation at step 6 spans the interruption.
    assert metrics_without_timings(tmp_path / "split") == metrics_without_timings(
        tmp_path / "whole"
    )
    for name, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    state = load_checkpoint(str(tmp_path / "split" / "last.pt"))
    assert state["step"] == 7
    config = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert config["model"]["pattern"] == "Window(8)" and config["train"]["max_steps"] == 7


def test_checkpoints_are_atomic_and_corruption_is_reported(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pt")
    state = {key: {} for key in RUN_KEYS}
    save_checkpoint(path, {**state, "step": 1})

    def crash(obj, handle):  # dies half-way through writing
        handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {**state, "step": 2})
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
    assert line["examples"] == 32 and line["loss"] == pytest.approx(
        result.metrics["val_loss"], rel=1e-5
    )
    assert line["accuracy"] == pytest.approx(result.metrics["val_accuracy"])
    assert evaluate_checkpoint(str(tmp_path / "last.pt"), split="test")["examples"] == 32


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["train", "--task", "sudoku", "--max-steps", "1", "--out", "x"],
            "unknown task 'sudoku'; valid tasks: image, listops, mlm, multihop, pathfinder, "
            "retrieval, text",
        ),
        (
            [
                "train",
                "--task",
                "multihop",
                "--preset",
                "huge",
                "--max-steps",
                "1",
                "--out",
                "x",
                "--task-arg",
                "num_samples=8",
            ],
            "unknown preset 'huge'; valid presets: tiny, small, paper_base",
        ),
        (
            [
                "train",
                "--task",
                "multihop",
                "--pattern",
                "Windw(8)",
                "--max-steps",
                "1",
                "--out",
                "x",
                "--task-arg",
                "num_samples=8",
            ],
            "unknown name 'Windw'",
        ),
        (["evaluate", "--checkpoint", "nowhere.pt"], "nowhere.pt does not exist"),
    ],
)
def test_bad_input_is_a_clear_error(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (dict(epochs=1.0), ValueError, "exactly one of max_steps and epochs"),
        (dict(batch_size=0), ValueError, "batch_size must be >= 1, got 0"),
        (dict(batch_size=True), TypeError, "batch_size must be an integer"),
        (dict(workers=-1), ValueError, "workers must be >= 0"),
        (dict(clip=-1.0), ValueError, "clip must be a number >= 0"),
        (dict(lr=0.0), ValueError, "lr must be a number > 0"),
        (dict(weight_decay=-5), ValueError, "weight_decay must be a number >= 0"),
        (dict(lr="0.1"), ValueError, "lr must be a number"),
    ],
)
def test_train_args_validation(overrides, error, message):
    with pytest.raises(error, match=message):
        TrainArgs(**{"max_steps": 3, **overrides})


def test_optimizer_is_fused_adamw_without_decay_on_biases_and_norms():
    # Reference: AdamW written out (Loshchilov and Hutter), three steps of different gradients
    # (one step cancels the bias corrections), decay on all but biases and LayerNorm weights.
    torch.manual_seed(0)
    model = DiffuserForSequenceClassification(preset_config("tiny", vocab_size=40, max_len=16))
    args = TrainArgs(max_steps=3, lr=0.01, weight_decay=0.5)
    optimizer = make_optimizer(model, args)
    assert optimizer.defaults["fused"]
    no_decay = {id(module.weight) for module in model.modules() if isinstance(module, LayerNorm)}
    decays = [
        0.0 if name.endswith("bias") or id(p) in no_decay else args.weight_decay
        for name, p in model.named_parameters()
    ]
    expected = [p.detach().clone() for p in model.parameters()]
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in expected]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, 4):
        grads = [torch.randn_like(p) for p in expected]
        for p, g in zip(model.parameters(), grads):
            p.grad = g.clone()
        optimizer.step()
        for p, (m, v), g, decay in zip(expected, moments, grads, decays):
            m.mul_(beta1).add_((1 - beta1) * g)
            v.mul_(beta2).add_((1 - beta2) * g * g)
            m_hat, v_hat = m / (1 - beta1**step), v / (1 - beta2**step)
            p.mul_(1 - args.lr * decay).sub_(args.lr * m_hat / (v_hat.sqrt() + eps))
    for p, q in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), q)


def test_resume_keeps_the_adamw_form_of_its_checkpoint():
    # A checkpoint of torch's default AdamW (as the trainer wrote before it used the fused
    # kernel) resumes on that form, the one its run would have continued with.
    model = DiffuserForSequenceClassification(preset_config("tiny", vocab_size=40, max_len=16))
    old = make_optimizer(model, TrainArgs(max_steps=3))
    for group in old.param_groups:
        group["fused"] = None
    resumed = make_optimizer(model, TrainArgs(max_steps=3))
    resumed.load_state_dict(old.state_dict())
    assert [group["fused"] for group in resumed.param_groups] == [None, None]


def test_train_args_take_paths_and_clip_zero_turns_clipping_off(tmp_path, monkeypatch):
    import pathlib

    args = quick_args(
        pathlib.Path(tmp_path), max_steps=1, clip=0.0, data_dir=pathlib.Path(tmp_path)
    )
    assert args.out == str(tmp_path) and args.data_dir == str(tmp_path)
    calls = []
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: calls.append(a))
    train(dataclasses.replace(args, data_dir=None))
    assert calls == [] and json.loads((tmp_path / "config.json").read_text())["train"][
        "out"
    ] == str(tmp_path)


def test_resume_drops_a_metrics_line_cut_short_by_a_crash(tmp_path):
    train(quick_args(tmp_path / "whole"))
    train(quick_args(tmp_path / "split", stop_after=5))
    with open(tmp_path / "split" / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 6, "loss": 2.3')  # the process died while writing
    train(quick_args(tmp_path / "split", resume=True))
    assert metrics_without_timings(tmp_path / "split") == metrics_without_timings(
        tmp_path / "whole"
    )


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    from graphdiff.train.distributed import init_distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device='cuda' but torch sees no CUDA device"):
        init_distributed("cuda")
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu' or 'cuda'"):
        init_distributed("tpu")


def test_listops_checkpoint_evaluates_on_an_lra_tsv_file(tmp_path, capsys):
    from graphdiff.tasks import ListOps
    from graphdiff.tasks.listops import evaluate as listops_value
    from graphdiff.tasks.listops import write_listops_tsv

    generator_args = {"num_samples": 16, "min_length": 10, "max_length": 60, "max_depth": 3}
    train(
        quick_args(
            tmp_path / "run", task="listops", pattern=None, max_steps=2, task_args=generator_args
        )
    )
    trees = [ListOps("test", seed=5, **generator_args).tree(i) for i in range(5)]
    tsv = tmp_path / "basic_test.tsv"
    write_listops_tsv(tsv, trees)
    assert (
        main(["evaluate", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--data", str(tsv)])
        == 0
    )
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["examples"] == 5 and 0.0 <= line["accuracy"] <= 1.0
    # The same numbers as evaluating the decoded examples directly.
    model, _ = load_model(str(tmp_path / "run" / "last.pt"))
    from graphdiff.tasks import ListOpsTSV, collate

    tokens, mask, labels = collate([ListOpsTSV("test", tsv)[i] for i in range(5)])
    assert labels.tolist() == [listops_value(tree) for tree in trees]
    logits = model(tokens, mask)
    assert line["accuracy"] == pytest.approx(float((logits.argmax(-1) == labels).float().mean()))

    # Longer sequences than the model takes: refused, or cut with --truncate.
    long_args = {**generator_args, "min_length": 70, "max_length": 200, "max_depth": 6}
    write_listops_tsv(tsv, [ListOps("test", seed=5, **long_args).tree(i) for i in range(3)])
    assert (
        main(["evaluate", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--data", str(tsv)])
        == 2
    )
    # Refused before any evaluation, at the line that is too long.
    expected = "basic_test.tsv:2: sequence of 78 tokens (CLS included) exceeds max_len=61"
    assert expected in capsys.readouterr().err
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(tmp_path / "run" / "last.pt"),
                "--data",
                str(tsv),
                "--truncate",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["examples"] == 3


def test_rng_states_restore_per_process_and_warn_when_they_cannot_be_exact():
    from graphdiff.train.distributed import DistributedContext
    from graphdiff.train.loop import restore_rng_states

    first, second = torch.manual_seed(1).get_state(), torch.manual_seed(2).get_state()
    restore_rng_states([{"cpu": first}, {"cpu": second}], DistributedContext(rank=1, world_size=2))
    assert torch.equal(torch.get_rng_state(), second)
    with pytest.warns(UserWarning, match="resuming on 3 processes a run saved on 2"):
        restore_rng_states(
            [{"cpu": first}, {"cpu": second}], DistributedContext(rank=2, world_size=3)
        )
    with pytest.warns(UserWarning, match="resuming on a GPU a run saved without one"):
        restore_rng_states([{"cpu": first}], DistributedContext(device=torch.device("cuda", 0)))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_release_free_memory_runs_on_glibc():
    assert release_free_memory() is True


@pytest.mark.parametrize(("log_every", "releases"), [(1, 7), (3, 2), (8, 0)])
def test_training_releases_free_memory_at_each_logged_step(
    tmp_path, monkeypatch, log_every, releases
):
    calls = []
    monkeypatch.setattr(graphdiff.train.loop, "release_free_memory", lambda: calls.append(1))
    train(quick_args(tmp_path / "run", max_steps=7, log_every=log_every))
    assert len(calls) == releases  # at steps log_every, 2 * log_every, ... <= 7
