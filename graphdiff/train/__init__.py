"""Training, evaluation, checkpoints and distributed set-up."""

from graphdiff.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from graphdiff.train.loop import (
    RunPlan,
    TrainArgs,
    TrainingRun,
    TrainResult,
    build_run,
    build_task,
    check_run,
    evaluate,
    fit,
    setup_run,
    train,
)
from graphdiff.train.memory import release_free_memory
from graphdiff.train.pretrained_encoder import load_encoder

__all__ = [
    "TrainArgs",
    "TrainResult",
    "TrainingRun",
    "train",
    "setup_run",
    "check_run",
    "build_run",
    "RunPlan",
    "fit",
    "evaluate",
    "build_task",
    "CheckpointError",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
    "release_free_memory",
    "load_encoder",
]
