"""The pretrained encoder that ``graphdiff train --init`` starts a run from.

It comes from a training checkpoint (``OUT/best.pt`` or ``OUT/last.pt`` of any task), a run
folder (its ``best.pt``), or a directory that
:meth:`~graphdiff.models.Diffuser.save_pretrained` wrote; :func:`graphdiff.models.init_config`
and :func:`graphdiff.models.initialize_encoder` put it under a fresh task head.
"""

from __future__ import annotations

import os
from typing import Dict, Tuple

from torch import Tensor

from graphdiff.io import PathLike
from graphdiff.models import Diffuser, DiffuserConfig
from graphdiff.models.pretrained import (
    CONFIG_NAME,
    ENCODER_PREFIX,
    WEIGHTS_NAME,
    encoder_state,
    read_pretrained,
)
from graphdiff.train.checkpoint import MODEL_KEYS, CheckpointError, load_checkpoint

# What --init takes, for the errors.
EXPECTED = (
    "--init takes a checkpoint file (OUT/best.pt), a run folder (its best.pt is used) or a "
    f"directory written by save_pretrained ({CONFIG_NAME} and {WEIGHTS_NAME})"
)


def load_encoder(path: PathLike) -> Tuple[DiffuserConfig, Dict[str, Tensor]]:
    """The configuration and the weights of the encoder stored at ``path``.

    Args:
        path: a training checkpoint; a run folder, whose ``best.pt`` is read; or a
            ``save_pretrained`` directory of any graphdiff model (a
            :class:`~graphdiff.models.Diffuser` or a task model).

    Returns:
        The encoder's :class:`~graphdiff.models.DiffuserConfig` (the whole model's, its head's
        fields included) and its :class:`~graphdiff.models.Diffuser` state dict (the keys
        without ``diffuser.``).

    Raises:
        FileNotFoundError: when ``path`` is missing, or a directory that is neither a run
            folder with a ``best.pt`` nor a ``save_pretrained`` directory with its weights.
        CheckpointError: for a checkpoint file that is not graphdiff's or is damaged.
        ValueError: for a run folder without ``best.pt`` (no validation yet), a damaged
            ``save_pretrained`` directory, or a model without an encoder.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist; {EXPECTED}")
    if not os.path.isdir(path):
        return _checkpoint_encoder(path)
    best = os.path.join(path, "best.pt")
    if os.path.isfile(best):
        return _checkpoint_encoder(best)
    if os.path.isfile(os.path.join(path, "last.pt")):
        raise ValueError(
            f"the run folder {path} has no best.pt yet (no validation has run); give "
            f"{os.path.join(path, 'last.pt')} to start from its last weights"
        )
    if not os.path.isfile(os.path.join(path, WEIGHTS_NAME)):
        found = (
            f"{CONFIG_NAME} but no {WEIGHTS_NAME}"
            if os.path.isfile(os.path.join(path, CONFIG_NAME))
            else f"neither best.pt nor {WEIGHTS_NAME}"
        )
        raise FileNotFoundError(f"the directory {path} holds {found}; {EXPECTED}")
    saved_class, values, state = read_pretrained(path)
    config = DiffuserConfig.from_dict(values)
    if saved_class == Diffuser.__name__:
        return config, state
    return config, _encoder_of(state, f"the {saved_class} in {path}")


def _checkpoint_encoder(path: str) -> Tuple[DiffuserConfig, Dict[str, Tensor]]:
    state = load_checkpoint(path, MODEL_KEYS)
    config = DiffuserConfig.from_dict(state["config"])
    try:
        return config, _encoder_of(state["model"], f"the checkpoint {path}")
    except ValueError as error:
        raise CheckpointError(str(error)) from None


def _encoder_of(state: Dict[str, Tensor], source: str) -> Dict[str, Tensor]:
    encoder = encoder_state(state)
    if not encoder:
        raise ValueError(f"{source} holds no encoder (no weights under {ENCODER_PREFIX!r})")
    return encoder
