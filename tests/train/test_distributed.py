"""Two CPU processes under torchrun (gloo) train the same model as one process with the same
global batch: identical weights on both ranks, and the same loss curve."""
import json
import os
import subprocess
import sys

import torch

from graphdiff.train import TrainArgs, train

WORKER = os.path.join(os.path.dirname(__file__), "ddp_worker.py")


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    options = dict(task="multihop", preset="tiny", max_steps=4, batch_size=8, log_every=1, eval_every=4,
                   progress=False, device="cpu", task_args={"num_samples": 32, "length": 32},
                   model_args={"hidden": 16, "ffn": 32, "heads": 2, "dropout": 0.0, "attention_dropout": 0.0})
    distributed_out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", WORKER,
               json.dumps({**options, "out": str(distributed_out)})]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]

    rank0 = torch.load(distributed_out / "weights_rank0.pt", weights_only=True)
    rank1 = torch.load(distributed_out / "weights_rank1.pt", weights_only=True)
    single = train(TrainArgs(**options, out=str(tmp_path / "single"))).model.state_dict()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
        # Adam normalises each gradient entry, so float noise in near-zero entries moves a weight by
        # up to ~lr * 0.1; a real mismatch (wrong batch split or averaging) moves it by ~lr per step.
        torch.testing.assert_close(rank0[name], single[name], rtol=0, atol=1e-4)

    def losses(run):
        lines = (json.loads(line) for line in open(run / "metrics.jsonl"))
        return [record["loss"] for record in lines if "loss" in record]

    assert len(losses(distributed_out)) == 4
    torch.testing.assert_close(torch.tensor(losses(distributed_out)), torch.tensor(losses(tmp_path / "single")),
                               rtol=1e-5, atol=1e-6)
