"""Evaluate a checkpoint on a split of its task, or on a given data file or directory."""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

from graphdiff.train.checkpoint import load_checkpoint, load_model
from graphdiff.train.loop import build_task, evaluate


def evaluate_checkpoint(path: str, data: Optional[str] = None, split: str = "test",
                        batch_size: int = 32, truncate: bool = False) -> Dict[str, Any]:
    """Accuracy, loss and number of examples of the model in ``path``.

    The task and its arguments come from the checkpoint. ``data`` replaces the task's data
    directory; for ListOps it may also be one LRA TSV file (``basic_test.tsv``). Sequences
    longer than the model's ``max_len`` are an error unless ``truncate`` cuts them (their
    labels still refer to the whole sequence).
    """
    train_args = load_checkpoint(path)["train"]
    model, _ = load_model(path)
    task_args, data_dir = dict(train_args["task_args"]), train_args["data_dir"]
    if data is not None:
        if not os.path.exists(data):
            raise FileNotFoundError(f"--data {data} does not exist")
        data_dir = data
        if train_args["task"] == "listops":  # the generator's arguments do not apply to LRA's files
            task_args = {k: v for k, v in task_args.items() if k in ("max_len", "truncate")}
    dataset = build_task(train_args["task"], split, task_args, data_dir)
    device = next(model.parameters()).device
    metrics = evaluate(model, dataset, batch_size, device, truncate=truncate)
    return {"checkpoint": path, "task": train_args["task"], "split": split, **metrics}
