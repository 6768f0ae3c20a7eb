"""The training loop on the masked-LM and retrieval objectives: metrics against independent
references, best-checkpoint selection, exact resumption and the command line."""

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from graphdiff.cli import main
from graphdiff.models import DiffuserForMaskedLM, DiffuserForRetrieval
from graphdiff.tasks import get_task
from graphdiff.tasks.mlm import IGNORE_INDEX
from graphdiff.tasks.retrieval import AAN_FILES
from graphdiff.train import TrainArgs, evaluate, load_model, train
from graphdiff.train.loop import build_task

MODEL_ARGS = {"hidden": 16, "ffn": 32, "heads": 2}
WORDS = (
    "the a graph of attention diffuses over many hops while windows see only near tokens".split()
)


@pytest.fixture
def text_dir(tmp_path):
    """Ten documents of word salad (a vocabulary a tiny model can learn something of)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "text"
    for index in range(10):
        folder = root / f"part{index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        words = rng.choice(WORDS, size=int(rng.integers(60, 120)))
        (folder / f"doc{index}.txt").write_text(" ".join(words) + ".\n", encoding="utf-8")
    return root


def mlm_args(out, text_dir, **overrides):
    values = dict(
        task="mlm",
        preset="tiny",
        out=str(out),
        pattern="Window(8)",
        data_dir=str(text_dir),
        task_args={"max_len": 48},
        model_args=MODEL_ARGS,
        max_steps=8,
        batch_size=4,
        eval_every=2,
        log_every=1,
        lr=3e-3,
        progress=False,
    )
    return TrainArgs(**{**values, **overrides})


def records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        return [json.loads(line) for line in handle]


def reference_mlm_metrics(model, dataset):
    """Cross-entropy of the full padded logits over the labelled positions, example by example."""
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for index in range(len(dataset)):
            tokens, labels = dataset[index]
            logits = model(tokens[None], torch.ones(1, len(tokens), dtype=torch.bool))[0]
            loss_sum += float(
                F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
            )
            scored = labels != IGNORE_INDEX
            correct += int((logits[scored].argmax(-1) == labels[scored]).sum())
            count += int(scored.sum())
    return loss_sum / count, correct / count, count


def test_mlm_validation_is_the_masked_cross_entropy_in_bits(tmp_path, text_dir):
    result = train(mlm_args(tmp_path / "run", text_dir, eval_examples=None))
    assert isinstance(result.model, DiffuserForMaskedLM)
    val = build_task("mlm", "val", {"max_len": 48}, str(text_dir))
    loss, accuracy, count = reference_mlm_metrics(result.model, val)
    metrics = result.metrics
    assert metrics["val_masked_tokens"] == count and metrics["val_examples"] == len(val)
    assert metrics["val_loss"] == pytest.approx(loss, rel=1e-5)
    assert metrics["val_accuracy"] == pytest.approx(accuracy)
    assert metrics["val_bpc"] == pytest.approx(loss / math.log(2), rel=1e-5)
    # best.pt is the evaluation with the lowest validation loss, not the highest accuracy.
    evaluations = [r for r in records(tmp_path / "run") if "val_loss" in r]
    lowest = min(evaluations, key=lambda r: r["val_loss"])
    model, _ = load_model(str(tmp_path / "run" / "best.pt"))
    assert isinstance(model, DiffuserForMaskedLM)
    assert evaluate(model, val, 4, torch.device("cpu"))["loss"] == pytest.approx(
        lowest["val_loss"], rel=1e-5
    )


def test_mlm_resumes_exactly_across_epochs_with_fresh_masks(tmp_path, text_dir):
    long = dict(task_args={"max_len": 256}, batch_size=8)
    whole = tmp_path / "whole"
    train(mlm_args(whole, text_dir, **long))
    parted = tmp_path / "parted"
    train(mlm_args(parted, text_dir, stop_after=5, **long))
    train(mlm_args(parted, text_dir, resume=True, **long))

    def without_timings(run_dir):
        return [{k: v for k, v in r.items() if k != "tokens_per_second"} for r in records(run_dir)]

    assert without_timings(parted) == without_timings(whole)
    dataset = build_task("mlm", "train", {"max_len": 256}, str(text_dir))
    steps_per_epoch = len(dataset) // 8
    assert steps_per_epoch < 5  # the interruption and the run both cross an epoch boundary
    first = dataset[0][1].clone()
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0][1], first)  # each epoch masks anew (dynamic masking)


def test_mlm_evaluates_a_folder_of_text_from_the_command_line(tmp_path, text_dir, capsys):
    train(mlm_args(tmp_path / "run", text_dir, max_steps=2))
    other = tmp_path / "other"
    other.mkdir()
    for index in range(10):
        (other / f"{index}.txt").write_text("graph attention hops " * (20 + index))
    capsys.readouterr()
    code = main(
        ["evaluate", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--data", str(other)]
    )
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["task"] == "mlm" and printed["split"] == "test"
    model, _ = load_model(str(tmp_path / "run" / "best.pt"))
    # Every document of the folder, not its test split: file i has 21 * (20 + i) bytes, cut
    # into chunks of 47.
    scored = get_task("mlm", "test", max_len=48, data_dir=str(other), all_documents=True)
    assert printed["examples"] == len(scored) == sum(-(-21 * (20 + i) // 47) for i in range(10))
    loss, _, count = reference_mlm_metrics(model, scored)
    assert printed["masked_tokens"] == count
    assert printed["bpc"] == pytest.approx(loss / math.log(2), rel=1e-5)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "holds no non-empty text file"),
        ({"a.bin": b"\x00\x01\x02"}, "binary"),
        ({"a.txt": b"caf\xe9"}, "not UTF-8"),
    ],
)
def test_mlm_bad_data_directory_is_a_one_line_error(tmp_path, capsys, files, message):
    data = tmp_path / "data"
    data.mkdir()
    for name, content in files.items():
        (data / name).write_bytes(content)
    argv = ["train", "--task", "mlm", "--max-steps", "1", "--data-dir", str(data)]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def write_aan(directory, rows_per_split=16, seed=0):
    """LRA's AAN layout: label, two ids, two texts; related pairs share their first word."""
    rng = np.random.default_rng(seed)
    for split, name in AAN_FILES.items():
        lines = []
        for row in range(rows_per_split):
            label = row % 2
            topic = rng.choice(WORDS)
            other = topic if label else rng.choice([w for w in WORDS if w != topic])
            text_a = " ".join([topic, *rng.choice(WORDS, 8)])
            text_b = " ".join([other, *rng.choice(WORDS, 8)])
            lines.append(f"{label}\tP{row}a\tP{row}b\t{text_a}\t{text_b}\n")
        (directory / name).write_text("".join(lines))
    return directory


def test_retrieval_trains_on_aan_files_and_evaluates_pairs(tmp_path):
    data = write_aan(tmp_path)
    args = TrainArgs(
        task="retrieval",
        preset="tiny",
        out=str(tmp_path / "run"),
        pattern="Window(8)",
        data_dir=str(data),
        task_args={"max_len": 64},
        model_args=MODEL_ARGS,
        max_steps=4,
        batch_size=4,
        eval_every=2,
        progress=False,
    )
    result = train(args)
    assert isinstance(result.model, DiffuserForRetrieval)
    val = build_task("retrieval", "val", {"max_len": 64}, str(data))
    # Reference: each pair on its own through the model, then the cross-entropy by hand.
    model = result.model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for index in range(len(val)):
            tokens_a, tokens_b, label = val[index]
            ones = [torch.ones(1, len(t), dtype=torch.bool) for t in (tokens_a, tokens_b)]
            logits = model(tokens_a[None], ones[0], tokens_b[None], ones[1])
            loss_sum += float(F.cross_entropy(logits, torch.tensor([label])))
            correct += int(logits.argmax() == label)
    metrics = result.metrics
    assert metrics["val_examples"] == len(val) == 16
    assert metrics["val_loss"] == pytest.approx(loss_sum / len(val), rel=1e-5)
    assert metrics["val_accuracy"] == pytest.approx(correct / len(val))
    loaded, _ = load_model(str(tmp_path / "run" / "last.pt"))
    assert isinstance(loaded, DiffuserForRetrieval)


def test_retrieval_tsv_with_a_missing_column_is_a_one_line_error(tmp_path, capsys):
    data = write_aan(tmp_path)
    (data / AAN_FILES["train"]).write_text("1\tP0a\tP0b\tonly one text\n")
    argv = ["train", "--task", "retrieval", "--max-steps", "1", "--data-dir", str(data)]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "new_aan_pairs.train.tsv:1" in error and "Traceback" not in error


def test_retrieval_checkpoint_evaluates_lra_files_or_a_folder_of_text(tmp_path, text_dir, capsys):
    args = TrainArgs(
        task="retrieval",
        preset="tiny",
        out=str(tmp_path / "run"),
        pattern="Window(8)",
        data_dir=str(text_dir),
        task_args={"max_len": 48, "source": "text", "num_samples": 8, "val_fraction": 0.2},
        model_args=MODEL_ARGS,
        max_steps=1,
        batch_size=4,
        progress=False,
    )
    train(args)
    checkpoint = str(tmp_path / "run" / "best.pt")
    aan = write_aan(tmp_path)  # LRA's files: read as pairs of texts, cut to the model's length
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", checkpoint, "--data", str(aan)]) == 2
    assert "exceeds max_len=48" in capsys.readouterr().err  # the model's length, not LRA's 4001
    assert main(["evaluate", "--checkpoint", checkpoint, "--data", str(aan), "--truncate"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 16
    code = main(["evaluate", "--checkpoint", checkpoint, "--data", str(text_dir), "--split", "val"])
    assert code == 0 and json.loads(capsys.readouterr().out)["examples"] == 8  # generated pairs
