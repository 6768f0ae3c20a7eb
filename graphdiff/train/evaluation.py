"""Evaluate a checkpoint on a split of its task, or on a given data file or directory."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

from torch import nn

from graphdiff.tasks import TaskDataset
from graphdiff.tasks.retrieval import AAN_FILES
from graphdiff.train.checkpoint import load_checkpoint, model_from_checkpoint
from graphdiff.train.loop import build_task, evaluate


def holds_aan_files(data: str) -> bool:
    """Whether ``data`` is one of LRA's Retrieval files or a directory that holds one."""
    if os.path.isfile(data):
        return True
    return any(os.path.exists(os.path.join(data, name)) for name in AAN_FILES.values())


def load_evaluation(
    path: str, data: Optional[str] = None, split: str = "test", truncate: bool = False
) -> Tuple[nn.Module, TaskDataset, str]:
    """The model in checkpoint ``path``, the data to evaluate it on, and its task's name.

    The task and its arguments come from the checkpoint. ``data`` replaces the task's data
    directory: for masked LM every document in it is scored (``split`` picks the masks); for
    retrieval it holds LRA's AAN files (or is one), else text for the matching task; for
    ListOps it may also be one LRA TSV file (``basic_test.tsv``). LRA's files are read with the
    model's ``max_len``: a longer sequence is an error here, before any evaluation, unless
    ``truncate`` cuts it (its label still refers to the whole sequence).

    Raises:
        CheckpointError: for a file that is not a graphdiff checkpoint.
        FileNotFoundError: when ``data`` does not exist.
        ValueError: for a bad ``split`` or data the task cannot read.
    """
    state = load_checkpoint(path, ("model", "config", "train"))  # read once, not per part
    train_args = state["train"]
    model, config = model_from_checkpoint(state)
    task_args, data_dir = dict(train_args["task_args"]), train_args["data_dir"]
    if data is not None:
        if not os.path.exists(data):
            raise FileNotFoundError(f"--data {data} does not exist")
        data_dir = data
        if train_args["task"] == "listops":  # the generator's arguments do not apply to LRA's files
            task_args = {"max_len": config.max_len, "truncate": truncate}
        elif train_args["task"] == "retrieval" and holds_aan_files(data):
            task_args = {"max_len": config.max_len, "truncate": truncate}
        elif train_args["task"] == "retrieval":  # text: the matching task on its documents
            task_args["source"] = "text"
        elif train_args["task"] == "mlm":  # a folder of text is scored whole
            task_args["all_documents"] = True
    return model, build_task(train_args["task"], split, task_args, data_dir), train_args["task"]


def evaluate_checkpoint(
    path: str,
    data: Optional[str] = None,
    split: str = "test",
    batch_size: int = 32,
    truncate: bool = False,
) -> Dict[str, Any]:
    """The metrics of the model in ``path`` under its task's objective (accuracy, loss and
    examples; for masked LM also ``bpc``; see :func:`load_evaluation` for the arguments)."""
    model, dataset, task = load_evaluation(path, data, split, truncate)
    device = next(model.parameters()).device
    metrics = evaluate(model, dataset, batch_size, device, truncate=truncate)
    return {"checkpoint": path, "task": task, "split": split, **metrics}
