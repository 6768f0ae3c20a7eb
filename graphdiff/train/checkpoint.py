"""Checkpoints: written atomically, loaded with ``weights_only=True``.

A checkpoint is a plain dictionary of tensors, numbers and strings (nothing that needs pickle's
arbitrary code execution): ``model``, ``optimizer`` and ``scheduler`` state dicts, the
``config`` and ``train`` arguments as dictionaries, the progress counters and the RNG state.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Tuple

import torch
from torch import nn

from graphdiff.io import atomic_write, atomic_write_text
from graphdiff.models import DiffuserConfig
from graphdiff.train.objectives import OBJECTIVES


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or not a graphdiff checkpoint."""


def save_checkpoint(path: str, state: Dict[str, Any]) -> None:
    atomic_write(path, lambda handle: torch.save(state, handle))


def save_json(path: str, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2))


# What a model is loaded from (load_model, analysis), and what graphdiff.train writes into
# every checkpoint and a resumed run reads.
MODEL_KEYS = ("model", "config")
RUN_KEYS = (
    "model",
    "optimizer",
    "scheduler",
    "rng",
    "step",
    "best",
    "window",
    "result",
    "config",
    "train",
)
# The models a training checkpoint may hold (one per objective), by the class name it records.
MODEL_CLASSES = {
    objective.model_class.__name__: objective.model_class for objective in OBJECTIVES.values()
}
# torch.save writes a zip archive; anything else is not a checkpoint.
ZIP_MAGIC = b"PK\x03\x04"


def load_checkpoint(path: str, keys: Tuple[str, ...] = MODEL_KEYS) -> Dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) with a clear error for bad files.

    Raises:
        CheckpointError: when ``path`` is missing, a directory, not a file that ``torch.save``
            writes, truncated, or a torch file without the ``keys`` the caller reads.
    """
    if os.path.isdir(path):
        names = sorted(name for name in os.listdir(path) if name.endswith(".pt"))
        hint = f" such as {os.path.join(path, names[0])}" if names else ""
        raise CheckpointError(f"checkpoint {path} is a directory; give a checkpoint file{hint}")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    with open(path, "rb") as handle:
        magic = handle.read(len(ZIP_MAGIC))
    if magic != ZIP_MAGIC:
        raise CheckpointError(f"{path} is not a graphdiff checkpoint (not a file torch.save wrote)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        # Not torch's message: it suggests weights_only=False, which a checkpoint never needs.
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated (torch.load raised {type(error).__name__})"
        ) from None
    missing = [key for key in keys if key not in state] if isinstance(state, dict) else keys
    if missing:
        raise CheckpointError(
            f"{path} is not a graphdiff checkpoint of this kind (missing {', '.join(missing)})"
        )
    return state


def load_model(path: str) -> Tuple[nn.Module, DiffuserConfig]:
    """The model stored in a checkpoint, in eval mode, and its config."""
    return model_from_checkpoint(load_checkpoint(path))


def model_from_checkpoint(state: Dict[str, Any]) -> Tuple[nn.Module, DiffuserConfig]:
    """The model of a loaded checkpoint, in eval mode, and its config: the class named by its
    ``model_class`` (a checkpoint without one holds a sequence classifier)."""
    config = DiffuserConfig.from_dict(state["config"])
    name = state.get("model_class", "DiffuserForSequenceClassification")
    if name not in MODEL_CLASSES:
        raise CheckpointError(
            f"the checkpoint holds a {name!r}, not one of graphdiff's models "
            f"({', '.join(MODEL_CLASSES)})"
        )
    model = MODEL_CLASSES[name](config)
    model.load_state_dict(state["model"])
    return model.eval(), config
