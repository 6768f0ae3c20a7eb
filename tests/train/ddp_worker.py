"""Run by test_distributed.py under torchrun: train, then save this rank's final weights."""

import json
import os
import sys

import torch

from graphdiff.train import TrainArgs, train

args = TrainArgs(**json.loads(sys.argv[1]))
result = train(args)
torch.save(
    result.model.state_dict(),
    os.path.join(args.out, f"weights_rank{os.environ.get('RANK', '0')}.pt"),
)
