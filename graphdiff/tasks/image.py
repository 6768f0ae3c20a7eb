"""Images as pixel sequences (LRA's Image task): Fashion-MNIST from IDX files, CIFAR-10 in gray.

An image becomes the sequence of its pixel intensities in row-major order, one token per pixel:
token ``2 + v`` for intensity ``v`` in 0..255 (ids 0 and 1 are PAD and CLS, so
``vocab_size = 258``), after the CLS token. Fashion-MNIST gives 28 x 28 = 784 pixels (sequences of
785 with CLS), CIFAR-10 32 x 32 = 1024 (1025). Both have 10 classes.

Sources:

- ``"fashion_mnist"``: any directory of IDX files ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
  optionally gzipped (``.gz``); MNIST's files work the same way. Default directory
  :data:`DEFAULT_FASHION_MNIST_DIR`, where Debian's package puts them
  (``apt-get install dataset-fashion-mnist``).
- ``"cifar10"``: the directory of CIFAR-10's python batches (``cifar-10-batches-py``):
  ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, pickled dicts with ``b"data"``
  (uint8 [N, 3072]: the red, green and blue 32 x 32 planes, each row-major) and ``b"labels"``.
  Pickles run code when loaded: only point this at files you trust.

CIFAR-10 is converted to gray as LRA does (``tf.image.rgb_to_grayscale`` on uint8 images)::

    gray = floor(255.5 * (0.2989 * R/255 + 0.5870 * G/255 + 0.1140 * B/255))   (float32)

Splits: ``"test"`` is the test file; ``"train"`` and ``"val"`` split the training file in order,
the last ``val_fraction`` (default 10%, as LRA's ``train[90%:]``) being ``"val"``: 54000 / 6000
images for Fashion-MNIST, 45000 / 5000 for CIFAR-10.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from graphdiff.tasks.base import (
    NUM_SPECIAL,
    TaskDataset,
    check_length,
    check_split,
    check_val_fraction,
    train_val_part,
)

__all__ = [
    "DEFAULT_FASHION_MNIST_DIR",
    "ImageTask",
    "load_cifar10_gray",
    "load_idx_images",
    "read_idx",
    "rgb_to_gray",
]

DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
NUM_CLASSES = 10
IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one these files use
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCHES = ("test_batch",)
GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)  # tf.image.rgb_to_grayscale


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzipped when the name ends in ``.gz``).

    Format: magic ``00 00 08 ndim``, then ``ndim`` big-endian uint32 sizes, then the bytes.

    Returns:
        uint8 array of the stored shape, e.g. [N, 28, 28] for images, [N] for labels.

    Raises:
        ValueError: naming the file, for bad gzip data, a bad magic number, a dimension count
            other than ``ndim``, or a payload shorter or longer than the sizes say.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    # gzip.BadGzipFile is an OSError; truncated gzip: EOFError; a corrupt deflate stream:
    # zlib.error.
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: unreadable IDX file: {err}") from None
    if len(data) < 4 or data[:3] != bytes([0, 0, IDX_UBYTE]) or data[3] != ndim:
        raise ValueError(
            f"{path}: bad IDX magic {data[:4].hex()!r}, expected '000008{ndim:02x}' "
            f"(unsigned bytes, {ndim} dimensions)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} of {header} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(shape)  # exact: three uint32 sizes can overflow int64
    if len(data) != expected:
        raise ValueError(
            f"{path}: IDX payload of {len(data) - header} bytes, expected {expected - header} "
            f"for shape {shape} ({'truncated' if len(data) < expected else 'trailing bytes'})"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _idx_path(root: Path, name: str) -> Path:
    """``root/name`` or ``root/name.gz``, whichever exists."""
    for path in (root / name, root / f"{name}.gz"):
        if path.is_file():
            return path
    raise ValueError(f"data_dir: neither {name} nor {name}.gz in {root}")


def _check_labels(labels: np.ndarray, count: int, where: str | os.PathLike) -> np.ndarray:
    """``labels`` as int64 [count], after checking the shape, the integer type and the range 0..9.

    A pickle may hold any labels: a fractional one would otherwise be cast to another class
    silently (2.7 to 2) and a negative one fail far from its file, in the loss.
    """
    if labels.ndim != 1:
        raise ValueError(f"{where}: labels must be a list [N], got shape {labels.shape}")
    if labels.shape[0] != count:
        raise ValueError(f"{where}: {labels.shape[0]} labels for {count} images")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{where}: labels must be integers, got {labels.dtype}")
    outside = labels[(labels < 0) | (labels >= NUM_CLASSES)]
    if outside.size:
        raise ValueError(f"{where}: label {outside[0]} outside 0..{NUM_CLASSES - 1}")
    return labels.astype(np.int64)


def load_idx_images(root: str | os.PathLike, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels from a directory of (Fashion-)MNIST IDX files.

    Returns:
        images: uint8 [N, rows * cols], pixels row-major.
        labels: int64 [N] in 0..9.
    """
    prefix = "train" if train else "t10k"
    images_path = _idx_path(Path(root), f"{prefix}-images-idx3-ubyte")
    labels_path = _idx_path(Path(root), f"{prefix}-labels-idx1-ubyte")
    images = read_idx(images_path, ndim=3)
    labels = _check_labels(read_idx(labels_path, ndim=1), images.shape[0], labels_path)
    return images.reshape(images.shape[0], -1), labels


def rgb_to_gray(data: np.ndarray) -> np.ndarray:
    """CIFAR rows uint8 [N, 3 * P] (R, G, B planes) to gray uint8 [N, P], as LRA converts them.

    Mirrors ``tf.image.rgb_to_grayscale``: scale to [0, 1] in float32, weight the channels,
    scale back by 255.5 and truncate.
    """
    planes = data.reshape(data.shape[0], 3, -1).astype(np.float32) * np.float32(1 / 255)
    gray = np.einsum("ncp,c->np", planes, GRAY_WEIGHTS)
    return (gray * np.float32(255.5)).astype(np.uint8)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(data uint8 [N, 3072], labels int64 [N])`` of one pickled CIFAR-10 batch."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch[b"labels"])
    except FileNotFoundError:
        raise ValueError(f"data_dir: no CIFAR-10 batch {path}") from None
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({err!r})") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: b'data' must be uint8 [N, 3072], got {data.dtype} {data.shape}")
    return data, _check_labels(labels, data.shape[0], path)


def load_cifar10_gray(root: str | os.PathLike, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Gray CIFAR-10 from its python batches.

    Returns:
        images: uint8 [N, 1024], gray pixels row-major.
        labels: int64 [N] in 0..9.
    """
    images, labels = [], []
    for name in CIFAR_TRAIN_BATCHES if train else CIFAR_TEST_BATCHES:
        data, batch_labels = _read_cifar_batch(Path(root) / name)
        images.append(rgb_to_gray(data))  # per batch: float32 planes of all 50000 are 600 MB
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


LOADERS: dict[str, Callable[[str | os.PathLike, bool], tuple[np.ndarray, np.ndarray]]] = {
    "fashion_mnist": load_idx_images,
    "cifar10": load_cifar10_gray,
}
DEFAULT_ROOTS = {"fashion_mnist": DEFAULT_FASHION_MNIST_DIR}


class ImageTask(TaskDataset):
    """Image classification from pixel sequences (see the module docstring for the format).

    Args:
        split: ``"train"``, ``"val"`` (the last ``val_fraction`` of the training file) or
            ``"test"``.
        source: ``"fashion_mnist"`` (IDX files) or ``"cifar10"`` (python batches, in gray).
        data_dir: directory of the files; default :data:`DEFAULT_FASHION_MNIST_DIR` for
            Fashion-MNIST, required for CIFAR-10.
        val_fraction: share of the training file held out as ``"val"``, in (0, 1).
        max_len: longest sequence, CLS included; default pixels + 1.
        truncate: allow a smaller ``max_len`` and keep only the first pixels.
    """

    vocab_size = NUM_SPECIAL + 256
    num_classes = NUM_CLASSES

    def __init__(
        self,
        split: str = "train",
        source: str = "fashion_mnist",
        data_dir: str | os.PathLike | None = None,
        val_fraction: float = 0.1,
        max_len: int | None = None,
        truncate: bool = False,
    ) -> None:
        if source not in LOADERS:
            raise ValueError(f"source must be one of {sorted(LOADERS)}, got {source!r}")
        if data_dir is None and source not in DEFAULT_ROOTS:
            raise ValueError(f"data_dir: {source} has no default directory, pass data_dir")
        check_val_fraction(val_fraction)
        check_split(split)  # before the (second-long) load
        self.source = source
        self.root = Path(DEFAULT_ROOTS[source] if data_dir is None else data_dir)
        if not self.root.is_dir():
            hint = (
                " (apt-get install dataset-fashion-mnist, or pass data_dir)"
                if data_dir is None
                else ""
            )
            raise ValueError(f"data_dir: {self.root} is not a directory{hint}")
        images, labels = LOADERS[source](self.root, split != "test")
        if split != "test":
            # The held-out slice is the tail of the file, in file order (LRA: train[90%:]).
            part = train_val_part(len(images), val_fraction, split, f"{source} in {self.root}")
            images, labels = images[part].copy(), labels[part].copy()
        self.images, self.labels = images, labels
        super().__init__(split, images.shape[1] + 1 if max_len is None else max_len, truncate)
        check_length(images.shape[1] + 1, self.max_len, truncate, f"{source} {split}")

    def __len__(self) -> int:
        return len(self.images)

    def content(self, index: int) -> tuple[np.ndarray, int]:
        return self.images[index].astype(np.int64) + NUM_SPECIAL, int(self.labels[index])
