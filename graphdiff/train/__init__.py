"""Training, evaluation, checkpoints and distributed set-up."""
from graphdiff.train.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from graphdiff.train.loop import TrainArgs, TrainResult, build_task, evaluate, train

__all__ = ["TrainArgs", "TrainResult", "train", "evaluate", "build_task", "CheckpointError", "load_checkpoint", "load_model",
           "save_checkpoint"]
