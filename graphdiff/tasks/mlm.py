r"""Masked language modelling on bytes: BERT's objective over a corpus of UTF-8 documents.

Tokens are the ones of the byte-level ``text`` task (:mod:`graphdiff.tasks.text`): token
``2 + b`` for byte ``b``, ids 0 and 1 PAD and CLS, plus :data:`MASK` ``= 258``; ``vocab_size =
259``, so an encoder pretrained here reads the ``text`` task's tokens unchanged.

Examples: each document of the split (:func:`~graphdiff.tasks.corpus.split_documents`, by
document) is cut into consecutive chunks of ``max_len - 1`` bytes, the last one shorter; an
example is CLS followed by one chunk. A chunk may start or end inside a multi-byte character:
the model sees bytes, not characters.

Masking (BERT, Devlin et al. 2019): each position but CLS is selected independently with
probability ``mask_prob`` (one uniformly chosen position when none is); a selected position
becomes :data:`MASK` with probability 0.8, a uniformly random byte token (``2 .. 257``, which
may be the original) with 0.1, and stays as it is with 0.1. The labels hold the original
token at the selected positions and :data:`IGNORE_INDEX` (``-100``, what
``torch.nn.functional.cross_entropy`` skips) everywhere else, CLS included.

Training masks are dynamic, as RoBERTa's (Liu et al. 2019): example ``i`` of epoch ``e`` is
masked by the stream ``np.random.default_rng([seed, split number, i, e])``, so every epoch
masks each chunk afresh and any example is reproducible on its own; the loop calls
:meth:`MaskedLMTask.set_epoch` before each epoch. Validation and test masks use epoch 0
whatever the epoch, so successive evaluations score the same predictions.

The score is the mean cross-entropy of the selected positions; :func:`bits_per_character`
turns it into bits.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from graphdiff.checks import check_int, is_real
from graphdiff.tasks.base import CLS, NUM_SPECIAL, PAD, SPLITS, TaskDataset, check_split
from graphdiff.tasks.corpus import check_fractions, load_documents, split_documents

__all__ = [
    "IGNORE_INDEX",
    "MASK",
    "MaskedLMTask",
    "bits_per_character",
    "collate_masked",
]

MASK = NUM_SPECIAL + 256  # after PAD, CLS and the 256 byte tokens
IGNORE_INDEX = -100  # label of a position that is not predicted (cross_entropy's default)
# BERT's replacement of a selected position: MASK, a random byte token, or unchanged.
MASK_REPLACE, RANDOM_REPLACE = 0.8, 0.1


def bits_per_character(loss_nats: float) -> float:
    r"""The masked-LM loss in bits: ``loss_nats / ln 2``.

    ``loss_nats`` is the mean cross-entropy, in nats (natural log, what
    ``torch.nn.functional.cross_entropy`` returns), of the selected (masked) positions; the
    result is the mean number of bits the model needs to encode a masked byte,
    :math:`-\frac{1}{|M|}\sum_{i \in M} \log_2 p(x_i \mid \tilde{x})`. For byte tokens that is
    bits per byte, which byte-level masked-LM papers (BigBird, Diffuser) report as bits per
    character (bpc); the two are equal on ASCII text and differ where characters take several
    bytes.
    """
    return float(loss_nats) / math.log(2)


def collate_masked(batch: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
    """Pad a list of ``(tokens [L_i], labels [L_i])`` pairs into a batch.

    Returns:
        tokens: ``LongTensor [B, L]`` with ``L = max L_i``, right-padded with :data:`PAD`.
        mask: ``BoolTensor [B, L]``, ``True`` on real tokens.
        labels: ``LongTensor [B, L]``, right-padded with :data:`IGNORE_INDEX`.

    Raises:
        ValueError: for an empty batch, or an example whose tokens and labels differ in length.
    """
    if len(batch) == 0:
        raise ValueError("collate_masked needs at least one example, got an empty batch")
    for i, (tokens, labels) in enumerate(batch):
        if len(tokens) != len(labels):
            raise ValueError(
                f"example {i} of the batch: {len(tokens)} tokens but {len(labels)} labels"
            )
    lengths = torch.tensor([len(tokens) for tokens, _ in batch])
    mask = torch.arange(int(lengths.max())) < lengths[:, None]
    tokens = torch.full(mask.shape, PAD, dtype=torch.long)
    labels = torch.full(mask.shape, IGNORE_INDEX, dtype=torch.long)
    # mask enumerates the real positions row-major, as the examples concatenated do.
    tokens[mask] = torch.cat([torch.as_tensor(t, dtype=torch.long) for t, _ in batch])
    labels[mask] = torch.cat([torch.as_tensor(y, dtype=torch.long) for _, y in batch])
    return tokens, mask, labels


class MaskedLMTask(TaskDataset):
    """Masked language modelling on the bytes of a corpus (see the module docstring).

    ``dataset[i] -> (tokens LongTensor [L], labels LongTensor [L])`` with ``L <= max_len``,
    CLS at position 0, the selected positions replaced in ``tokens`` and labelled in
    ``labels`` (:data:`IGNORE_INDEX` elsewhere); :func:`collate_masked` pads a batch.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``: a fixed split of the documents.
        data_dir: a directory of UTF-8 text files, read recursively
            (:func:`~graphdiff.tasks.corpus.read_documents`); ``None`` for Python's own
            documentation (:func:`~graphdiff.tasks.corpus.python_docs`). (default: ``None``)
        max_len: longest sequence, CLS included, at least 2. (default: 1024)
        seed: the masking seed, a non-negative integer. (default: 0)
        mask_prob: probability that a position is selected, in (0, 1). (default: 0.15)
        val_fraction: share of the documents held out as ``"val"``. (default: 0.1)
        test_fraction: share of the documents held out as ``"test"``. (default: 0.1)
        all_documents: every document of the corpus, not the split's: what ``graphdiff
            evaluate --data DIR`` scores. ``split`` then only picks the masking stream.
            (default: ``False``)

    Attributes:
        documents: the :class:`~graphdiff.tasks.corpus.Document` list of the split.
        epoch: the epoch that masks the training split (:meth:`set_epoch`).
    """

    vocab_size = MASK + 1
    num_classes = vocab_size  # a prediction is over the vocabulary
    objective = "masked_lm"
    collate = staticmethod(collate_masked)

    def __init__(
        self,
        split: str = "train",
        data_dir: str | os.PathLike | None = None,
        max_len: int = 1024,
        seed: int = 0,
        mask_prob: float = 0.15,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        all_documents: bool = False,
    ) -> None:
        check_split(split)
        check_int("max_len", max_len, 2, why="CLS and at least one byte")
        if not isinstance(all_documents, bool):
            raise TypeError(f"all_documents must be a bool, got {all_documents!r}")
        self.seed = check_int("seed", seed, 0)
        if not is_real(mask_prob) or not 0.0 < mask_prob < 1.0:
            raise ValueError(f"mask_prob must be a number in (0, 1), got {mask_prob!r}")
        check_fractions(val_fraction, test_fraction)
        super().__init__(split, max_len, truncate=False)
        self.mask_prob = float(mask_prob)
        self.epoch = 0
        documents = load_documents(data_dir)
        self.documents = (
            sorted(documents)
            if all_documents
            else split_documents(documents, split, val_fraction, test_fraction)
        )
        chunk = self.max_len - 1
        # Example i is documents[_document[i]].text[_start[i] : _start[i] + chunk].
        counts = [-(-len(document.text) // chunk) for document in self.documents]
        self._document = np.repeat(np.arange(len(counts)), counts)
        self._start = np.concatenate([np.arange(count) * chunk for count in counts])

    def __len__(self) -> int:
        return len(self._document)

    def set_epoch(self, epoch: int) -> None:
        """Mask the training split for ``epoch`` (a non-negative integer) from now on;
        validation and test masks do not depend on it.

        A ``DataLoader`` with workers copies the dataset when its iterator starts: call this
        before iterating the epoch (``persistent_workers=True`` would keep the first epoch's).
        """
        self.epoch = check_int("epoch", epoch, 0)

    def chunk(self, index: int) -> bytes:
        """The original bytes of example ``index`` (its tokens less CLS, unmasked)."""
        index = self._index(index)
        start = int(self._start[index])
        return self.documents[self._document[index]].text[start : start + self.max_len - 1]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        index = self._index(index)
        original = np.frombuffer(self.chunk(index), dtype=np.uint8).astype(np.int64) + NUM_SPECIAL
        epoch = self.epoch if self.split == "train" else 0
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), index, epoch])
        n = len(original)
        # Every draw is made whatever its outcome, so the stream is a fixed function of n.
        selected = rng.random(n) < self.mask_prob
        fallback = rng.integers(n)
        replace = rng.random(n)
        random_tokens = rng.integers(NUM_SPECIAL, MASK, size=n)
        if not selected.any():
            selected[fallback] = True
        masked = np.where(
            replace < MASK_REPLACE,
            MASK,
            np.where(replace < MASK_REPLACE + RANDOM_REPLACE, random_tokens, original),
        )
        tokens = np.concatenate([[CLS], np.where(selected, masked, original)])
        labels = np.concatenate([[IGNORE_INDEX], np.where(selected, original, IGNORE_INDEX)])
        return torch.from_numpy(tokens), torch.from_numpy(labels)
