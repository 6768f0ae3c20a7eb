"""graphdiff train --init: a run starts from a pretrained encoder (a checkpoint, a run folder or
a save_pretrained directory) under the run's seeded fresh head, on a task of another length,
class count and vocabulary; --resume wins over --init."""

import dataclasses
import json
import os
import shutil

import pytest
import torch

from graphdiff.cli import main
from graphdiff.models import DiffuserForSequenceClassification
from graphdiff.train import TrainArgs, build_run, check_run, fit, load_model, train
from graphdiff.train.distributed import init_distributed, shutdown

PRETRAIN = dict(
    task="multihop",
    preset="tiny",
    pattern="Window(8)",
    max_steps=4,
    batch_size=8,
    eval_every=2,
    task_args={"num_samples": 32, "length": 32},
    model_args={"hidden": 16, "ffn": 32, "heads": 2},
    progress=False,
)
# Another multihop: longer (max_len 48), 5 classes, 15 tokens, 2 hops, its own pattern.
FINETUNE = dict(
    task="multihop",
    hops=2,
    max_steps=4,
    batch_size=8,
    eval_every=2,
    log_every=1,
    seed=3,
    task_args={"num_samples": 32, "length": 48, "num_values": 5},
    progress=False,
)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A pretraining run's folder, its best.pt's model and a save_pretrained copy of it."""
    root = tmp_path_factory.mktemp("pretrained")
    train(TrainArgs(out=str(root / "run"), **PRETRAIN))
    model, _ = load_model(str(root / "run" / "best.pt"))
    model.save_pretrained(root / "saved")
    config = dataclasses.replace(model.config, pad_token_id=1)
    DiffuserForSequenceClassification(config).save_pretrained(root / "roberta_like")
    return root, model


def started_run(out, **overrides):
    context = init_distributed("cpu")
    try:
        return build_run(check_run(TrainArgs(out=str(out), **{**FINETUNE, **overrides}), context))
    finally:
        shutdown(context)


@pytest.mark.parametrize("source", ["run/best.pt", "run", "saved"])
def test_a_run_starts_from_the_pretrained_encoder_and_a_fresh_head(source, pretrained, tmp_path):
    root, model = pretrained
    run = started_run(tmp_path / "fine", init=str(root / source))
    config = run.config
    assert (config.max_len, config.num_classes, config.hops) == (48, 5, 2)
    assert (config.hidden, config.ffn, config.heads, config.vocab_size) == (16, 32, 2, 20)
    assert config.pattern == "Window(8)"  # the task's suggestion
    old, new = model.diffuser.state_dict(), run.model.diffuser.state_dict()
    table = old["embeddings.positions.weight"]  # 32 positions tiled to 48
    assert torch.equal(new["embeddings.positions.weight"], torch.cat([table, table[:16]]))
    for name in old.keys() - {"embeddings.positions.weight"}:
        assert torch.equal(new[name], old[name]), name
    torch.manual_seed(FINETUNE["seed"])
    fresh = DiffuserForSequenceClassification(config).state_dict()
    for name in ("dense.weight", "dense.bias", "classifier.weight", "classifier.bias"):
        assert torch.equal(run.model.state_dict()[name], fresh[name]), name
    result = fit(run)
    assert result.metrics["step"] == 4 and result.metrics["val_examples"] == 32
    saved = json.loads((tmp_path / "fine" / "config.json").read_text())
    assert saved["train"]["init"] == str(root / source) and saved["model"]["max_len"] == 48


def test_resume_continues_from_last_pt_without_reading_init(pretrained, tmp_path):
    root, _ = pretrained
    encoder = tmp_path / "encoder.pt"
    shutil.copy(root / "run" / "best.pt", encoder)
    whole = train(TrainArgs(out=str(tmp_path / "whole"), init=str(encoder), **FINETUNE))
    train(TrainArgs(out=str(tmp_path / "split"), init=str(encoder), stop_after=3, **FINETUNE))
    os.remove(encoder)
    resumed = train(  # checkpointing may change on resume: the same gradients, exactly
        TrainArgs(
            out=str(tmp_path / "split"),
            init=str(encoder),
            resume=True,
            grad_checkpoint=True,
            **FINETUNE,
        )
    )
    expected = dataclasses.replace(whole.model.config, gradient_checkpointing=True)
    assert resumed.model.config == expected
    for name, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    with pytest.raises(ValueError, match="init: '.*encoder.pt' in the run, None now"):
        train(TrainArgs(out=str(tmp_path / "split"), resume=True, **FINETUNE))


def test_the_run_decides_gradient_checkpointing_not_the_encoder(tmp_path):
    """An encoder pretrained with --grad-checkpoint fine-tunes without it unless asked."""
    pretrain = train(TrainArgs(out=str(tmp_path / "pre"), grad_checkpoint=True, **PRETRAIN))
    assert pretrain.model.config.gradient_checkpointing
    init = str(tmp_path / "pre" / "best.pt")
    assert not started_run(tmp_path / "plain", init=init).config.gradient_checkpointing
    assert started_run(
        tmp_path / "ckpt", init=init, grad_checkpoint=True
    ).config.gradient_checkpointing


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--init", "nowhere"], "nowhere does not exist; --init takes a checkpoint file"),
        (
            ["--init", "{root}/run", "--model-arg", "hidden=32"],
            "hidden=32 differs from the pretrained encoder's hidden=16",
        ),
        (
            ["--init", "{root}/run", "--task-arg", "num_fillers=20"],
            "vocab_size=32 exceeds the pretrained encoder's vocabulary of 20 tokens",
        ),
        (
            ["--init", "{root}/run", "--preset", "small"],
            "--preset does not apply with --init",
        ),
        (  # a converted RoBERTa: pad id 1, where graphdiff's tasks put CLS
            ["--init", "{root}/roberta_like"],
            "the encoder pads with token id 1, but graphdiff's tasks pad with 0",
        ),
    ],
)
def test_bad_init_is_a_one_line_error(extra, message, pretrained, tmp_path, capsys):
    root, _ = pretrained
    argv = ["train", "--task", "multihop", "--max-steps", "1", "--out", str(tmp_path / "out")]
    argv += ["--task-arg", "num_samples=8", "--batch-size", "8"]
    argv += [part.format(root=root) for part in extra]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_masked_lm_pretraining_then_text_classification_on_longer_reviews(tmp_path):
    # The recipe of docs/tasks.md on text the test writes: the text task's 258 byte tokens run
    # under the masked-LM encoder's 259, its 24 positions are the pretrained 16 tiled.
    generator = torch.Generator().manual_seed(0)
    words = ["graph", "diffusion", "attention", "sparse", "token", "layer", "window", "hop"]

    def text(count):
        return " ".join(words[i] for i in torch.randint(8, (count,), generator=generator))

    corpus, reviews = tmp_path / "corpus", tmp_path / "aclImdb"
    corpus.mkdir()
    for index in range(12):
        (corpus / f"doc{index:02d}.txt").write_text(text(60))
    for part, count in (("train", 10), ("test", 2)):
        for label in ("neg", "pos"):
            (reviews / part / label).mkdir(parents=True)
            for index in range(count):
                (reviews / part / label / f"{index}_7.txt").write_text(text(10))
    common = dict(batch_size=8, max_steps=2, eval_every=2, progress=False)
    train(
        TrainArgs(
            task="mlm",
            out=str(tmp_path / "mlm"),
            data_dir=str(corpus),
            task_args={"max_len": 16},
            model_args={"hidden": 16, "ffn": 32, "heads": 2, "layers": 1},
            **common,
        )
    )
    mlm, _ = load_model(str(tmp_path / "mlm" / "best.pt"))
    run = started_run(
        tmp_path / "text",
        task="text",
        init=str(tmp_path / "mlm"),
        data_dir=str(reviews),
        task_args={"max_len": 24},
        **common,
    )
    assert (run.config.vocab_size, run.config.max_len, run.config.num_classes) == (259, 24, 2)
    old, new = mlm.diffuser.state_dict(), run.model.diffuser.state_dict()
    table = old["embeddings.positions.weight"]
    assert torch.equal(new["embeddings.positions.weight"], torch.cat([table, table[:8]]))
    for name in old.keys() - {"embeddings.positions.weight"}:
        assert torch.equal(new[name], old[name]), name
    assert fit(run).metrics["step"] == 2
