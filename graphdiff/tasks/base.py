"""The interface every task dataset shares: splits, seeding, length checks and the collate.

Every task is a :class:`torch.utils.data.Dataset` of ``(tokens, label)`` pairs:

- ``tokens``: ``LongTensor [L]`` with ``L <= max_len``. Position 0 is always :data:`CLS`, so a
  model with ``pooling="cls"`` reads its answer there; the task's own tokens follow.
- ``label``: ``int`` in ``[0, num_classes)``.

Token ids ``0`` (:data:`PAD`) and ``1`` (:data:`CLS`) are reserved in every task; task tokens
start at :data:`NUM_SPECIAL`. ``vocab_size`` counts the reserved ids, so an embedding table of
``vocab_size`` rows covers every id a task emits.

Generated tasks are functions of ``(seed, split, index)``: :func:`example_rng` is the one place
that turns those into a random stream, so every split of every seed is a distinct, reproducible
stream and an example can be regenerated on its own (random access, no state between calls).
"""

from __future__ import annotations

import operator
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from graphdiff.checks import check_int, is_real

__all__ = [
    "CLS",
    "NUM_SPECIAL",
    "PAD",
    "SPLITS",
    "TaskDataset",
    "check_length",
    "check_split",
    "check_val_fraction",
    "collate",
    "example_rng",
    "train_val_part",
]

PAD = 0
CLS = 1
NUM_SPECIAL = 2
SPLITS = ("train", "val", "test")


def check_split(split: str) -> str:
    """Return ``split`` if it is one of :data:`SPLITS`, else raise ``ValueError``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def check_val_fraction(val_fraction: float) -> float:
    """Return ``val_fraction`` if it is a number in (0, 1), else raise ``ValueError``."""
    if not is_real(val_fraction) or not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    return val_fraction


def train_val_part(count: int, val_fraction: float, split: str, where: str) -> slice:
    """The positions of ``split`` (``"train"`` or ``"val"``) among ``count`` training examples:
    the last ``round(count * val_fraction)`` are ``"val"``, the others ``"train"``.

    Raises:
        ValueError: naming ``where`` when the split would be empty (a model validated on no
            examples would report an accuracy of 0 instead).
    """
    cut = count - round(count * check_val_fraction(val_fraction))
    part = slice(0, cut) if split == "train" else slice(cut, count)
    if part.start == part.stop:
        raise ValueError(
            f"val_fraction={val_fraction} leaves the {split} split of {where} empty "
            f"({count} training examples)"
        )
    return part


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of example ``index`` of ``split`` under ``seed``.

    Built from the entropy tuple ``(seed, split number, index)``, so streams for different
    splits, seeds or indices are independent and each example is reproducible on its own.
    """
    return np.random.default_rng([seed, SPLITS.index(check_split(split)), index])


def check_length(length: int, max_len: int, truncate: bool, where: str) -> None:
    """Raise ``ValueError`` when a sequence of ``length`` tokens exceeds ``max_len``.

    ``where`` names the offending sequence (file and line, split and index) in the message.
    With ``truncate=True`` long sequences are allowed: the dataset cuts them to ``max_len``.
    """
    if length > max_len and not truncate:
        raise ValueError(
            f"{where}: sequence of {length} tokens (CLS included) exceeds max_len={max_len}; "
            "raise max_len or pass truncate=True"
        )


def collate(batch: Sequence[tuple[Tensor, int]]) -> tuple[Tensor, Tensor, Tensor]:
    """Pad a list of ``(tokens [L_i], label)`` pairs into a batch.

    Returns:
        tokens: ``LongTensor [B, L]`` with ``L = max L_i``, right-padded with :data:`PAD`.
        mask: ``BoolTensor [B, L]``, ``True`` on real tokens (``mask.sum(1)`` are the lengths).
        labels: ``LongTensor [B]``.
    """
    if len(batch) == 0:
        raise ValueError("collate needs at least one example, got an empty batch")
    lengths = torch.tensor([len(tokens) for tokens, _ in batch])
    tokens = torch.full((len(batch), int(lengths.max())), PAD, dtype=torch.long)
    mask = torch.arange(tokens.size(1)) < lengths[:, None]
    # One masked write instead of a per-row copy loop: mask enumerates real tokens row-major.
    tokens[mask] = torch.cat([torch.as_tensor(t, dtype=torch.long) for t, _ in batch])
    labels = torch.tensor([int(label) for _, label in batch], dtype=torch.long)
    return tokens, mask, labels


class TaskDataset(Dataset):
    """Base class of the task datasets: ``dataset[i] -> (tokens LongTensor [L], label int)``.

    Subclasses set ``vocab_size`` and ``num_classes``, call ``super().__init__`` and implement
    ``__len__`` and :meth:`content`; this class prepends :data:`CLS` and applies ``max_len``.

    Attributes:
        split: ``"train"``, ``"val"`` or ``"test"``.
        vocab_size: number of token ids (reserved ids included).
        num_classes: number of labels.
        max_len: longest sequence returned, CLS included.
        truncate: whether sequences longer than ``max_len`` are cut (else they raise).
        objective: what a model learns from the examples: ``"classification"`` (one label per
            sequence) here; subclasses with other targets name theirs.
        collate: the function that pads a list of examples into a batch (:func:`collate`).
    """

    vocab_size: int
    num_classes: int
    objective = "classification"
    collate = staticmethod(collate)

    def __init__(self, split: str, max_len: int, truncate: bool) -> None:
        self.split = check_split(split)
        self.max_len = check_int("max_len", max_len, 1)
        self.truncate = bool(truncate)

    def __len__(self) -> int:
        raise NotImplementedError

    def content(self, index: int) -> tuple[np.ndarray, int]:
        """Task tokens of example ``index`` (int array [L - 1], CLS excluded) and its label."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Called by the training loop before each epoch; a task whose examples are drawn anew
        every epoch (masked LM's masks) overrides it."""

    def _index(self, index: int) -> int:
        """``index`` in ``[0, len)``, counting negative indices from the end."""
        index = operator.index(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} examples")
        return index % len(self)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        tokens, label = self.content(self._index(index))
        tokens = torch.as_tensor(np.asarray(tokens)[: self.max_len - 1], dtype=torch.long)
        return torch.cat([torch.tensor([CLS]), tokens]), int(label)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, examples={len(self)}, "
            f"vocab_size={self.vocab_size}, num_classes={self.num_classes}, "
            f"max_len={self.max_len})"
        )
