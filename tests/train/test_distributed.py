"""Two CPU processes under torchrun (gloo) train the same model as one process with the same
global batch (identical weights on both ranks, the same loss curve), and resume exactly."""

import json
import os
import subprocess
import sys

import torch

from graphdiff.train import TrainArgs, train

WORKER = os.path.join(os.path.dirname(__file__), "ddp_worker.py")


def run_ddp(out, options):
    """Train with ``options`` on two processes under torchrun; each saves its final weights in
    ``out``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        WORKER,
        json.dumps({**options, "out": str(out)}),
    ]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    options = dict(
        task="multihop",
        preset="tiny",
        max_steps=4,
        batch_size=8,
        log_every=1,
        eval_every=4,
        progress=False,
        device="cpu",
        task_args={"num_samples": 32, "length": 32},
        model_args={"hidden": 16, "ffn": 32, "heads": 2, "dropout": 0.0, "attention_dropout": 0.0},
    )
    distributed_out = tmp_path / "ddp"
    run_ddp(distributed_out, options)

    rank0 = torch.load(distributed_out / "weights_rank0.pt", weights_only=True)
    rank1 = torch.load(distributed_out / "weights_rank1.pt", weights_only=True)
    single = train(TrainArgs(**options, out=str(tmp_path / "single"))).model.state_dict()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
        # Adam normalises each gradient entry, so float noise in near-zero entries moves a weight by
        # up to ~lr * 0.1; a real mismatch (wrong batch split or averaging) moves it by ~lr per
        # step.
        torch.testing.assert_close(rank0[name], single[name], rtol=0, atol=1e-4)

    def losses(run):
        lines = (json.loads(line) for line in open(run / "metrics.jsonl"))
        return [record["loss"] for record in lines if "loss" in record]

    assert len(losses(distributed_out)) == 4
    torch.testing.assert_close(
        torch.tensor(losses(distributed_out)),
        torch.tensor(losses(tmp_path / "single")),
        rtol=1e-5,
        atol=1e-6,
    )


def test_two_processes_resume_exactly_with_dropout_on_sequences_of_different_lengths(tmp_path):
    # Each process draws as much dropout randomness as its own sequences need, so every process's
    # RNG state must be saved and restored, not only the first one's.
    options = dict(
        task="listops",
        preset="tiny",
        max_steps=6,
        batch_size=8,
        log_every=1,
        eval_every=3,
        progress=False,
        device="cpu",
        pattern="Window(8)",
        task_args={"num_samples": 32, "min_length": 5, "max_length": 60, "max_depth": 4},
        model_args={"hidden": 16, "ffn": 32, "heads": 2},
    )
    run_ddp(tmp_path / "whole", options)
    run_ddp(tmp_path / "split", {**options, "stop_after": 4})
    run_ddp(tmp_path / "split", {**options, "resume": True})
    for rank in (0, 1):
        whole = torch.load(tmp_path / "whole" / f"weights_rank{rank}.pt", weights_only=True)
        split = torch.load(tmp_path / "split" / f"weights_rank{rank}.pt", weights_only=True)
        for name in whole:
            assert torch.equal(whole[name], split[name]), (rank, name)

    def metrics(run):
        return [
            {k: v for k, v in json.loads(line).items() if k != "tokens_per_second"}
            for line in open(run / "metrics.jsonl")
        ]

    assert metrics(tmp_path / "split") == metrics(tmp_path / "whole")
