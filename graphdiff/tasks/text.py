"""Byte-level text classification (LRA's Text task): IMDb movie reviews from ``aclImdb``.

A review becomes the sequence of its UTF-8 bytes, one token per byte: token ``2 + b`` for byte
``b`` (ids 0 and 1 are PAD and CLS, so ``vocab_size = 258``), after the CLS token, as LRA's
``ByteTextEncoder`` does (it shifts by its own reserved ids). The text is used as LRA reads it
through TFDS's ``imdb_reviews``: as stored, ``<br />`` tags included, less leading and trailing
ASCII whitespace (``bytes.strip``). Labels: 0 negative, 1 positive.

Source: the directory of the Large Movie Review Dataset v1.0 (``aclImdb``, Maas et al. 2011),
one review per file::

    aclImdb/train/pos/{id}_{rating}.txt   aclImdb/train/neg/...   (12500 + 12500)
    aclImdb/test/pos/...                  aclImdb/test/neg/...    (12500 + 12500)

(``train/unsup`` is not read). Splits: ``"test"`` is ``test/``; ``"train"`` and ``"val"`` split
``train/``: a fixed shuffle of its files (sorted by label and id, then permuted with seed 0)
holds out the last ``val_fraction`` (default 10%) as ``"val"``. LRA instead validates on the
test set, which leaves no untouched test set.

Length: LRA's paper uses 4K tokens and its released configuration 1000; reviews run to about
14,000 bytes. Longer reviews are cut to ``max_len`` (default 4096 with CLS), as LRA cuts them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from graphdiff.tasks.base import (
    NUM_SPECIAL,
    TaskDataset,
    check_length,
    check_split,
    check_val_fraction,
    train_val_part,
)

__all__ = ["LABELS", "TextTask", "list_acl_imdb"]

LABELS = ("neg", "pos")  # label i is the folder LABELS[i]
REVIEW_NAME = re.compile(r"(\d+)_(\d+)\.txt")  # {id}_{rating}.txt
READ_BLOCK = 1 << 16  # bytes read at a time past the cut, while only whitespace follows


def list_acl_imdb(root: str | os.PathLike, part: str) -> tuple[list[Path], np.ndarray]:
    """The review files of ``root/part/{neg,pos}``, sorted by label then review id (none read).

    Returns:
        paths: the file of every review.
        labels: int64 [N], 0 for ``neg``, 1 for ``pos``.

    Raises:
        ValueError: naming the folder or file, for a missing folder, a file name other than
            ``{id}_{rating}.txt``, an entry that is not a file, or a label without any review.
    """
    paths, labels = [], []
    for label, name in enumerate(LABELS):
        folder = Path(root) / part / name
        if not folder.is_dir():
            raise ValueError(f"data_dir: no folder {folder} (expected aclImdb's layout)")
        numbered = []
        for path in folder.iterdir():
            match = REVIEW_NAME.fullmatch(path.name)
            if match is None:
                raise ValueError(f"{path}: not an aclImdb review file name ({{id}}_{{rating}}.txt)")
            if not path.is_file():
                raise ValueError(f"{path}: not a readable file")
            numbered.append((int(match.group(1)), path))
        if not numbered:
            raise ValueError(f"data_dir: no reviews in {folder}")
        paths += [path for _, path in sorted(numbered)]
        labels += [label] * len(numbered)
    return paths, np.array(labels, dtype=np.int64)


def _read(path: Path, limit: int | None) -> bytes:
    """The review in ``path`` less surrounding whitespace (TFDS strips it), cut to its first
    ``limit`` bytes when given: ``content.strip()[:limit]``.

    Linear in what it reads, which stops once the cut is known: at the first non-whitespace
    byte past the ``limit`` kept (a huge review costs about ``limit`` bytes, a short one
    followed by a huge run of whitespace is scanned, not copied).
    """
    with open(path, "rb") as handle:
        if limit is None:
            return handle.read().strip()
        block = max(limit + 1, READ_BLOCK)
        head = b""  # the content from its first non-whitespace byte, until it holds > limit
        while len(head) <= limit:
            chunk = handle.read(block)
            if not chunk:
                return head.rstrip()[:limit]
            head = (head + chunk).lstrip()
        # The cut is head[:limit] unless everything after it is whitespace.
        if head[limit:].strip():
            return head[:limit]
        while chunk := handle.read(block):
            if chunk.strip():
                return head[:limit]
        return head.rstrip()[:limit]


class TextTask(TaskDataset):
    """IMDb sentiment from the bytes of each review (see the module docstring for the format).

    Args:
        split: ``"train"``, ``"val"`` (a fixed ``val_fraction`` of ``train/``) or ``"test"``.
        data_dir: the ``aclImdb`` directory (holding ``train/`` and ``test/``).
        val_fraction: share of ``train/`` held out as ``"val"``, in (0, 1).
        max_len: longest sequence, CLS included. (default: 4096)
        truncate: cut longer reviews to ``max_len`` (LRA does); ``False`` makes a longer review
            an error that names its file. (default: ``True``)
    """

    vocab_size = NUM_SPECIAL + 256
    num_classes = len(LABELS)

    def __init__(
        self,
        split: str = "train",
        data_dir: str | os.PathLike | None = None,
        val_fraction: float = 0.1,
        max_len: int = 4096,
        truncate: bool = True,
    ) -> None:
        check_split(split)
        if data_dir is None:
            raise ValueError("data_dir: pass the aclImdb directory (nothing is downloaded)")
        check_val_fraction(val_fraction)
        super().__init__(split, max_len, truncate)
        self.root = Path(data_dir)
        paths, labels = list_acl_imdb(self.root, "test" if split == "test" else "train")
        if split != "test":
            # Files come sorted by label: a fixed shuffle gives both splits both labels. The
            # split is chosen from the file list, so each split reads only its own files.
            order = np.random.default_rng(0).permutation(len(paths))
            chosen = order[train_val_part(len(paths), val_fraction, split, str(self.root))]
            paths, labels = [paths[i] for i in chosen], labels[chosen]
        # Cut reviews are read only as far as the cut: a huge file costs no more than max_len.
        # Refusing long ones needs each review's whole (stripped) length.
        reviews = [_read(path, self.max_len - 1 if truncate else None) for path in paths]
        self.paths, self.reviews, self.labels = paths, reviews, labels
        if not truncate:
            for path, review in zip(paths, reviews):
                check_length(len(review) + 1, self.max_len, truncate, str(path))

    def __len__(self) -> int:
        return len(self.reviews)

    def content(self, index: int) -> tuple[np.ndarray, int]:
        review = np.frombuffer(self.reviews[index], dtype=np.uint8)
        return review.astype(np.int64) + NUM_SPECIAL, int(self.labels[index])
