"""Image task: IDX and CIFAR-10 readers on fixtures the tests write, and the LRA gray formula."""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from graphdiff.tasks import CLS, DEFAULT_FASHION_MNIST_DIR, NUM_SPECIAL, ImageTask, get_task
from graphdiff.tasks.image import read_idx, rgb_to_gray


def idx_bytes(array):
    """An IDX file of unsigned bytes, written from the format description."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_dir(root, n_train=10, n_test=4, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 3, 4), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for kind, array, dims in (("images", images, 3), ("labels", labels, 1)):
            raw = idx_bytes(array)
            name = f"{prefix}-{kind}-idx{dims}-ubyte"
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (root / name).write_bytes(raw)
        data[prefix] = images, labels
    return data


@pytest.mark.parametrize("gz", [False, True])
def test_idx_splits_tokens_and_labels(tmp_path, gz):
    data = write_idx_dir(tmp_path, gz=gz)
    train_images, train_labels = data["train"]
    expected = {
        "train": (train_images[:8], train_labels[:8]),  # the last 20% of train is val
        "val": (train_images[8:], train_labels[8:]),
        "test": data["t10k"],
    }
    for split, (images, labels) in expected.items():
        ds = get_task("image", split, data_dir=tmp_path, val_fraction=0.2)
        assert (len(ds), ds.max_len, ds.vocab_size, ds.num_classes) == (len(images), 13, 258, 10)
        for i in range(len(ds)):
            tokens, label = ds[i]
            assert tokens[0] == CLS and label == labels[i]
            assert tokens[1:].tolist() == (images[i].reshape(-1).astype(int) + NUM_SPECIAL).tolist()


def test_idx_max_len_and_truncate(tmp_path):
    write_idx_dir(tmp_path)
    with pytest.raises(ValueError, match="13 tokens.*max_len=5"):
        ImageTask("test", data_dir=tmp_path, max_len=5)
    tokens, _ = ImageTask("test", data_dir=tmp_path, max_len=5, truncate=True)[0]
    assert len(tokens) == 5


def corrupt(raw, how):
    if how == "bad magic":
        return b"\x00\x00\x09" + raw[3:]
    if how == "wrong ndim":
        return raw[:3] + b"\x02" + raw[4:]
    if how == "truncated payload":
        return raw[:-1]
    if how == "truncated header":
        return raw[:6]
    if how == "trailing bytes":
        return raw + b"\x00"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how, match",
    [
        ("bad magic", "bad IDX magic"),
        ("wrong ndim", "bad IDX magic"),
        ("truncated payload", "truncated"),
        ("truncated header", "truncated IDX header"),
        ("trailing bytes", "trailing bytes"),
    ],
)
def test_corrupt_idx_names_the_file(tmp_path, how, match):
    write_idx_dir(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(corrupt(path.read_bytes(), how))
    with pytest.raises(ValueError, match=rf"t10k-images-idx3-ubyte: .*{match}"):
        ImageTask("test", data_dir=tmp_path)


def test_corrupt_gzip_names_the_file(tmp_path):
    write_idx_dir(tmp_path, gz=True)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])  # cut inside the deflate stream and trailer
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz: unreadable IDX"):
        ImageTask("train", data_dir=tmp_path)


def test_corrupt_deflate_stream_names_the_file(tmp_path):
    write_idx_dir(tmp_path, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[12:14] = bytes(
        b ^ 0xFF for b in raw[12:14]
    )  # inside the deflate data, after the 10-byte header
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz: unreadable IDX"):
        ImageTask("test", data_dir=tmp_path)


@pytest.mark.parametrize(
    "labels, match",
    [
        ([-1, 3], "label -1 outside 0..9"),
        ([1.7, 2.0], "labels must be integers, got float64"),
        (5, r"labels must be a list \[N\], got shape \(\)"),
        ([[1], [2]], r"labels must be a list \[N\], got shape \(2, 1\)"),
    ],
)
def test_bad_cifar_labels_name_the_file(tmp_path, labels, match):
    write_cifar_dir(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": labels}, f)
    with pytest.raises(ValueError, match=rf"test_batch: {match}"):
        ImageTask("test", source="cifar10", data_dir=tmp_path)


def test_idx_label_mismatch_and_missing_files(tmp_path):
    write_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(ValueError, match="3 labels for 4 images"):
        ImageTask("test", data_dir=tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(4, 10, np.uint8)))
    with pytest.raises(ValueError, match="label 10 outside 0..9"):
        ImageTask("test", data_dir=tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ValueError, match="neither t10k-labels-idx1-ubyte nor"):
        ImageTask("test", data_dir=tmp_path)


def test_an_empty_split_is_refused(tmp_path):
    write_idx_dir(tmp_path)  # 10 training images
    with pytest.raises(
        ValueError, match=r"val_fraction=0.01 leaves the val split of fashion_mnist in .* empty"
    ):
        ImageTask("val", data_dir=tmp_path, val_fraction=0.01)
    with pytest.raises(ValueError, match="val_fraction=0.99 leaves the train split .* empty"):
        ImageTask("train", data_dir=tmp_path, val_fraction=0.99)


def test_read_idx_shape(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(array))
    assert np.array_equal(read_idx(tmp_path / "a", ndim=3), array)


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="source must be one of"):
        ImageTask("train", source="svhn", data_dir=tmp_path)
    with pytest.raises(ValueError, match="cifar10 has no default directory"):
        ImageTask("train", source="cifar10")
    with pytest.raises(ValueError, match=r"val_fraction must be a number in \(0, 1\)"):
        ImageTask("train", data_dir=tmp_path, val_fraction=1.0)
    with pytest.raises(ValueError, match=r"val_fraction must be a number in \(0, 1\), got '0.1'"):
        ImageTask("train", data_dir=tmp_path, val_fraction="0.1")
    with pytest.raises(ValueError, match="is not a directory"):
        ImageTask("train", data_dir=tmp_path / "nope")


# Hand-computed from LRA's formula floor(255.5 * (0.2989 R + 0.5870 G + 0.1140 B) / 255).
GRAY_CASES = [
    ((0, 0, 0), 0),
    ((255, 255, 255), 255),
    ((255, 0, 0), 76),
    ((0, 255, 0), 149),
    ((0, 0, 255), 29),
    ((10, 20, 30), 18),
    ((200, 100, 50), 124),
]


def write_cifar_dir(root, per_batch=2, seed=0):
    """CIFAR-10 python batches; pixel p of image k has RGB GRAY_CASES[(k + p) % 7]."""
    rng = np.random.default_rng(seed)
    rgb = np.array([c for c, _ in GRAY_CASES], dtype=np.uint8)
    batches = {}
    for b, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        case = (np.arange(per_batch)[:, None] + b * per_batch + np.arange(1024)) % len(GRAY_CASES)
        data = np.concatenate([rgb[case, c] for c in range(3)], axis=1)  # R, G, B planes
        labels = rng.integers(0, 10, size=per_batch).tolist()
        with open(root / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f)
        batches[name] = case, labels
    return batches


def test_cifar10_gray_sequences(tmp_path):
    batches = write_cifar_dir(tmp_path)
    gray_of = np.array([g for _, g in GRAY_CASES])
    train_cases = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_labels = sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    train = ImageTask("train", source="cifar10", data_dir=tmp_path)
    val = ImageTask("val", source="cifar10", data_dir=tmp_path)
    test = ImageTask("test", source="cifar10", data_dir=tmp_path)
    assert (len(train), len(val), len(test), train.max_len) == (9, 1, 2, 1025)
    for ds, cases, labels in (
        (train, train_cases[:9], train_labels[:9]),
        (val, train_cases[9:], train_labels[9:]),
        (test, *batches["test_batch"]),
    ):
        for i in range(len(ds)):
            tokens, label = ds[i]
            assert label == labels[i] and tokens[0] == CLS
            assert torch.equal(tokens[1:], torch.as_tensor(gray_of[cases[i]] + NUM_SPECIAL))


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
        min_size=1,
        max_size=20,
    )
)
def test_rgb_to_gray_is_the_truncated_luma(pixels):
    rgb = np.array(pixels, dtype=np.uint8)  # [P, 3]
    gray = rgb_to_gray(rgb.T.reshape(1, -1))[0].astype(float)
    luma = 255.5 / 255 * (rgb @ np.array([0.2989, 0.5870, 0.1140]))
    assert np.all(gray <= luma + 1e-3) and np.all(gray > luma - 1 - 1e-3)


def test_bad_cifar_batch_names_the_file(tmp_path):
    write_cifar_dir(tmp_path)
    (tmp_path / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="test_batch: not a CIFAR-10 python batch"):
        ImageTask("test", source="cifar10", data_dir=tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match=r"test_batch: b'data' must be uint8 \[N, 3072\]"):
        ImageTask("test", source="cifar10", data_dir=tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(ValueError, match="no CIFAR-10 batch .*data_batch_3"):
        ImageTask("train", source="cifar10", data_dir=tmp_path)


@pytest.mark.skipif(
    not Path(DEFAULT_FASHION_MNIST_DIR).is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_installed_fashion_mnist():
    val = ImageTask("val")
    assert (len(val), val.max_len) == (6000, 785)
    tokens, label = val[0]
    assert len(tokens) == 785 and int(tokens.max()) < val.vocab_size and 0 <= label < 10
    assert sorted(set(val.labels.tolist())) == list(range(10))
