"""`graphdiff train` / `evaluate` / `patterns` never surprise: exit codes, one-line messages,
untouched files, and what the training loop decides, against values worked out by hand."""

import json
import os

import pytest
import torch

from graphdiff.cli import main
from graphdiff.train import TrainArgs, load_checkpoint, load_model, loop, setup_run, train
from graphdiff.train.distributed import DistributedContext

TINY = [
    "--task",
    "multihop",
    "--preset",
    "tiny",
    "--pattern",
    "Window(8)",
    "--batch-size",
    "8",
    "--task-arg",
    "num_samples=16",
    "--task-arg",
    "length=32",
    "--model-arg",
    "hidden=16",
    "--model-arg",
    "ffn=32",
    "--model-arg",
    "heads=2",
    "--log-every",
    "1",
]


def train_cli(out, *extra):
    return main(["train", *TINY, "--out", str(out), *extra])


def snapshot(folder):
    """Every file's bytes and modification time."""
    return {
        name: (
            open(os.path.join(folder, name), "rb").read(),
            os.stat(os.path.join(folder, name)).st_mtime_ns,
        )
        for name in sorted(os.listdir(folder))
    }


def one_error_line(capsys, command="train"):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"graphdiff {command}: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 4-step run (two steps per epoch) and its final result."""
    out = tmp_path_factory.mktemp("finished")
    assert train_cli(out, "--max-steps", "4") == 0
    return out


def test_an_existing_run_is_refused_and_untouched_and_overwrite_replaces_it(
    finished_run, tmp_path, capsys
):
    out = tmp_path / "run"
    out.mkdir()
    for name in os.listdir(finished_run):
        (out / name).write_bytes((finished_run / name).read_bytes())
    before = snapshot(out)
    assert train_cli(out, "--max-steps", "4", "--seed", "1") == 2
    line = one_error_line(capsys)
    assert "--resume" in line and "--overwrite" in line and "holds a run" in line
    assert snapshot(out) == before

    (out / "notes.txt").write_text("mine")
    assert train_cli(out, "--max-steps", "3", "--seed", "1", "--overwrite") == 0
    assert json.loads((out / "config.json").read_text())["train"]["seed"] == 1
    steps = [json.loads(line)["step"] for line in open(out / "metrics.jsonl")]
    assert max(steps) == 3  # nothing of the 4-step run is left
    assert load_checkpoint(str(out / "last.pt"))["step"] == 3
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files are replaced


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--preset", "small"], "preset: 'tiny' in the run, 'small' now"),
        (
            ["--model-arg", "layers=1"],
            "model_args: {'hidden': 16, 'ffn': 32, 'heads': 2} in the run, "
            "{'hidden': 16, 'ffn': 32, 'heads': 2, 'layers': 1} now",
        ),
        (
            ["--seed", "3", "--lr", "0.01"],
            "lr: 0.001 in the run, 0.01 now; seed: 0 in the run, 3 now",
        ),
        (["--max-steps", "3"], "max_steps: 4 in the run, 3 now"),
    ],
)
def test_resume_with_other_arguments_is_one_line_naming_them(finished_run, capsys, extra, expected):
    before = snapshot(finished_run)
    # A later option wins in argparse: the same command line with one value changed.
    assert train_cli(finished_run, "--max-steps", "4", "--resume", *extra) == 2
    line = one_error_line(capsys)
    assert expected in line and "Traceback" not in line
    assert snapshot(finished_run) == before


def test_resuming_a_finished_run_prints_its_result_and_does_not_extend_it(finished_run, capsys):
    before = snapshot(finished_run)
    final = [json.loads(line) for line in open(finished_run / "metrics.jsonl")][-1]
    assert final["step"] == 4 and "val_accuracy" in final
    assert train_cli(finished_run, "--max-steps", "4", "--resume") == 0
    captured = capsys.readouterr()
    assert "had already finished its 4 steps" in captured.err
    assert json.loads(captured.out.strip()) == final

    assert train_cli(finished_run, "--max-steps", "100", "--resume") == 2
    line = one_error_line(capsys)
    assert "finished its 4 steps (max_steps: 4 in the run, 100 now)" in line
    assert "not extended" in line and "--overwrite" in line
    assert snapshot(finished_run) == before


def test_nothing_to_resume_is_an_error(tmp_path, capsys):
    assert train_cli(tmp_path / "empty", "--max-steps", "4", "--resume") == 2
    assert "nothing to resume in" in one_error_line(capsys)
    assert not (tmp_path / "empty").exists()
    # a run that died before its first checkpoint
    (tmp_path / "config.json").write_text('{"model": {}, "train": {}}')
    assert train_cli(tmp_path, "--max-steps", "4", "--resume") == 2
    assert "start a new run there with --overwrite" in one_error_line(capsys)
    with pytest.raises(SystemExit):
        train_cli(tmp_path, "--max-steps", "4", "--resume", "--overwrite")
    assert "--overwrite: not allowed with argument --resume" in capsys.readouterr().err


def test_tokens_per_second_counts_training_steps_only(tmp_path, monkeypatch):
    # A fake clock: each training step takes 1 s, each validation and checkpoint 100 s.
    clock = [0.0]
    monkeypatch.setattr(loop.time, "perf_counter", lambda: clock[0])

    def slow(function, seconds):
        def wrapped(*args, **kwargs):
            clock[0] += seconds
            return function(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(loop, "train_step", slow(loop.train_step, 1.0))
    monkeypatch.setattr(loop, "evaluate", slow(loop.evaluate, 100.0))
    monkeypatch.setattr(loop, "save_checkpoint", slow(loop.save_checkpoint, 100.0))
    args = TrainArgs(
        task="multihop",
        out=str(tmp_path),
        pattern="Window(8)",
        max_steps=6,
        batch_size=8,
        eval_every=3,
        task_args={"num_samples": 16, "length": 32},
        model_args={"hidden": 16, "ffn": 32, "heads": 2},
        progress=False,
    )
    train(args)
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    # Every multihop sequence holds `length` tokens: 8 sequences of 32 per one-second step.
    assert [r["tokens_per_second"] for r in records if "tokens_per_second" in r] == [256.0, 256.0]


@pytest.mark.parametrize(
    "option, examples",
    [([], 160), (["--eval-examples", "5"], 5), (["--eval-examples", "all"], 200)],
)
def test_validation_is_capped_by_default(tmp_path, capsys, option, examples):
    assert (
        main(
            [
                "train",
                *TINY,
                "--task-arg",
                "num_samples=200",
                "--max-steps",
                "1",
                "--out",
                str(tmp_path),
                *option,
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["val_examples"] == examples
    # The loss is that of the validation split's first examples.
    from graphdiff.tasks import MultiHop

    model, _ = load_model(str(tmp_path / "last.pt"))
    val = MultiHop("val", num_samples=200, length=32)
    expected = loop.evaluate(
        model, torch.utils.data.Subset(val, range(examples)), 8, torch.device("cpu")
    )
    assert result["val_loss"] == pytest.approx(expected["loss"], rel=1e-6)


def test_the_help_states_the_defaults_and_the_resume_rule(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default: {loop.DEFAULT_EVAL_EXAMPLES})" in text
    assert "A finished run is not extended" in text and "more steps are refused" in text


def test_evaluate_names_a_directory_and_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    (tmp_path / "last.pt").write_bytes(b"")
    assert main(["evaluate", "--checkpoint", str(tmp_path)]) == 2
    line = one_error_line(capsys, "evaluate")
    assert f"checkpoint {tmp_path} is a directory" in line and "last.pt" in line
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "notes.txt")]) == 2
    line = one_error_line(capsys, "evaluate")
    assert "notes.txt is not a graphdiff checkpoint" in line and "weights_only" not in line


def test_bad_input_in_set_up_is_one_line_even_as_a_type_error(tmp_path, capsys):
    # MultiHop checks that length is an integer: a TypeError, but the user's.
    assert (
        main(
            [
                "train",
                *TINY,
                "--task-arg",
                "length='long'",
                "--max-steps",
                "1",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 2
    )
    assert "length must be an integer" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_an_error_while_training_or_evaluating_keeps_its_traceback(
    finished_run, tmp_path, monkeypatch
):
    def bug(*args, **kwargs):
        raise TypeError("an internal bug")

    monkeypatch.setattr(loop, "train_step", bug)
    with pytest.raises(TypeError, match="an internal bug"):
        train_cli(tmp_path, "--max-steps", "2")
    monkeypatch.setattr(loop, "make_optimizer", bug)  # after the checks: not the user's error
    with pytest.raises(TypeError, match="an internal bug"):
        train_cli(tmp_path / "other", "--max-steps", "2")
    monkeypatch.setattr("graphdiff.train.evaluate", bug)
    with pytest.raises(TypeError, match="an internal bug"):
        main(["evaluate", "--checkpoint", str(finished_run / "last.pt"), "--split", "val"])


def test_lr_schedule_at_chosen_steps(tmp_path):
    # 10 steps, warm-up 0.2: w = 2 warm-up steps, then (10 - s) / 8. The logged lr is the one
    # of the next step: f(s) after step s; step 1 itself ran with f(0) = 1/2.
    assert loop.lr_factor(0, 10, 2) == 0.5
    train(
        TrainArgs(
            task="multihop",
            out=str(tmp_path),
            pattern="Window(8)",
            max_steps=10,
            batch_size=8,
            warmup=0.2,
            lr=1e-3,
            log_every=1,
            task_args={"num_samples": 16, "length": 32},
            model_args={"hidden": 16, "ffn": 32, "heads": 2},
            progress=False,
        )
    )
    lrs = [r["lr"] for r in map(json.loads, open(tmp_path / "metrics.jsonl")) if "lr" in r]
    expected = [1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0]
    assert lrs == pytest.approx([1e-3 * f for f in expected], abs=1e-12)


@pytest.mark.parametrize(
    "num_samples, epochs, evaluated",
    [
        # 5 steps an epoch, ceil(2.5 * 5) = 13 steps: a fifth of the run (2) comes before an epoch.
        (40, "2.5", [2, 4, 6, 8, 10, 12, 13]),
        # 2 steps an epoch, ceil(7.5 * 2) = 15 steps: an epoch (2) comes before a fifth (3).
        (16, "7.5", [2, 4, 6, 8, 10, 12, 14, 15]),
    ],
)
def test_training_by_epochs_and_the_default_eval_every(
    tmp_path, capsys, num_samples, epochs, evaluated
):
    assert (
        main(
            [
                "train",
                *TINY,
                "--task-arg",
                f"num_samples={num_samples}",
                "--epochs",
                epochs,
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, evaluated[-1] + 1))
    assert [r["step"] for r in records if "val_accuracy" in r] == evaluated
    steps_per_epoch = num_samples // 8
    assert [r["epoch"] for r in records if "val_accuracy" in r] == [
        step / steps_per_epoch for step in evaluated
    ]


@pytest.mark.parametrize(
    "options, pattern, hops, alpha",
    [
        # tiny's own: diffuser(window=16, ...), K = 5, alpha = 0.1; multihop's pattern: Window(8).
        (dict(), "Window(8)", 5, 0.1),
        (dict(pattern="Window(4)"), "Window(4)", 5, 0.1),
        (dict(pattern="Window(4)", model_args={"pattern": "Window(2)"}), "Window(2)", 5, 0.1),
        (dict(hops=3, alpha=0.2), "Window(8)", 3, 0.2),
        (dict(hops=3, alpha=0.2, model_args={"hops": 4}), "Window(8)", 4, 0.2),
    ],
)
def test_precedence_of_pattern_hops_and_alpha(options, pattern, hops, alpha):
    from graphdiff.tasks import MultiHop

    args = TrainArgs(task="multihop", max_steps=1, **options)
    config = loop.build_config(args, MultiHop("train", num_samples=2, length=32))
    assert (config.pattern, config.hops, config.alpha) == (pattern, hops, alpha)
    assert (config.vocab_size, config.max_len) == (
        MultiHop("train", num_samples=2, length=32).vocab_size,
        32,
    )


def test_a_batch_that_does_not_divide_among_processes_is_refused_before_any_work(tmp_path):
    args = TrainArgs(task="multihop", out=str(tmp_path / "run"), max_steps=1, batch_size=9)
    with pytest.raises(ValueError, match="batch_size=9 must be divisible by the 2 processes"):
        setup_run(args, DistributedContext(rank=0, world_size=2))
    assert not (tmp_path / "run").exists()


def test_patterns_subcommand_writes_the_statistics_worked_out_by_hand(tmp_path, capsys):
    # Window(2) covers |i - j| <= 1: on 5 tokens, 5 self-loops and 2 * 4 neighbours.
    assert main(["patterns", "Window(2)", "--n", "5", "--out", str(tmp_path)]) == 0
    stats = json.loads((tmp_path / "pattern_5.json").read_text())
    assert stats == {
        "pattern": "Window(2)",
        "tokens": 5,
        "edges": 13,
        "edges_per_token": pytest.approx(2.6),
        "min_in_degree": 2,
        "mean_in_degree": pytest.approx(2.6),
        "max_in_degree": 3,
        "symmetric": True,
        "global_tokens": 0,
    }
    assert (tmp_path / "pattern_5.png").stat().st_size > 0
    assert "| edges | 13 |" in capsys.readouterr().out
    assert (
        main(["patterns", "Window(2)", "--n", "5", "--no-self-loops", "--out", str(tmp_path)]) == 0
    )
    assert json.loads((tmp_path / "pattern_5.json").read_text())["edges"] == 8
    assert main(["patterns", "Windw(2)", "--n", "5", "--out", str(tmp_path)]) == 2
    assert "unknown name 'Windw'" in one_error_line(capsys, "patterns")
    with pytest.raises(SystemExit):
        main(["patterns", "Window(2)", "--n", "0"])
    assert "--n: must be >= 1, got 0" in capsys.readouterr().err


def test_the_cli_module_loads_without_torch():
    import subprocess
    import sys

    code = "import sys, graphdiff.cli; print('torch' in sys.modules)"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "False"


def test_a_folder_that_is_not_a_run_is_never_overwritten(tmp_path, capsys):
    saved = tmp_path / "pretrained"  # what save_pretrained writes: not a training run
    saved.mkdir()
    (saved / "config.json").write_text('{"hidden": 16, "model_class": "Diffuser"}')
    (saved / "model.safetensors").write_bytes(b"weights")
    before = snapshot(saved)
    for flags in ([], ["--overwrite"], ["--resume"]):
        assert train_cli(saved, "--max-steps", "2", *flags) == 2
        assert "holds a config.json that is not a graphdiff run's" in one_error_line(capsys)
    assert snapshot(saved) == before
    (tmp_path / "file").write_text("x")
    assert train_cli(tmp_path / "file", "--max-steps", "2", "--overwrite") == 2
    assert "is a file, not a run folder" in one_error_line(capsys)
    assert (tmp_path / "file").read_text() == "x"


def test_grad_checkpoint_trains_the_run_it_would_train_without(tmp_path):
    assert train_cli(tmp_path / "plain", "--max-steps", "2") == 0
    assert train_cli(tmp_path / "ckpt", "--max-steps", "2", "--grad-checkpoint") == 0
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["model"]["gradient_checkpointing"] is True
    plain, ckpt = (load_checkpoint(str(tmp_path / run / "last.pt")) for run in ("plain", "ckpt"))
    for name, weight in plain["model"].items():
        assert torch.equal(weight, ckpt["model"][name]), name


def test_bf16_precision_trains_and_is_part_of_the_run(tmp_path, capsys):
    assert train_cli(tmp_path / "run", "--max-steps", "2", "--precision", "bf16") == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["precision"] == "bf16"
    capsys.readouterr()
    assert train_cli(tmp_path / "run", "--max-steps", "2", "--resume") == 2
    assert "precision: 'bf16' in the run, 'fp32' now" in one_error_line(capsys)
