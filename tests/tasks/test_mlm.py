"""Masked language modelling: chunks, BERT's masking, dynamic masks, collate, bits per byte."""

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from graphdiff.tasks import CLS, PAD, MultiHop, TaskDataset, collate
from graphdiff.tasks.corpus import python_docs, read_documents, split_documents
from graphdiff.tasks.mlm import (
    IGNORE_INDEX,
    MASK,
    MaskedLMTask,
    bits_per_character,
    collate_masked,
)


def write_corpus(root, n=10, size=3000, seed=0):
    """``n`` documents of ``size`` random bytes of printable ASCII and a few 2- and 3-byte
    characters, named doc00 ... in nested folders."""
    rng = np.random.default_rng(seed)
    alphabet = list("abcdefghij klmnop\n.,") + ["\u00e9", "\u2605"]
    texts = {}
    for i in range(n):
        text = "".join(rng.choice(alphabet, size=size)).encode("utf-8")
        path = root / f"part{i % 3}" / f"doc{i:02d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text)
        texts[path.relative_to(root).as_posix()] = text
    return texts


def byte_tokens(text):
    return [2 + b for b in text]  # the text task's encoding


def test_examples_are_cls_and_consecutive_chunks(tmp_path):
    texts = write_corpus(tmp_path, size=1000)
    for split in ("train", "val", "test"):
        task = MaskedLMTask(split, data_dir=tmp_path, max_len=100)
        names = [d.name for d in split_documents(read_documents(tmp_path), split)]
        assert [d.name for d in task.documents] == names
        # Examples run through the split's documents in order, each cut into 99-byte chunks
        # and a shorter last one (the texts are 1000 characters, some of 2 or 3 bytes).
        joined = b"".join(task.chunk(i) for i in range(len(task)))
        assert joined == b"".join(texts[name] for name in names)
        lengths = [len(task.chunk(i)) for i in range(len(task))]
        expected = []
        for name in names:
            full, rest = divmod(len(texts[name]), 99)
            expected += [99] * full + [rest] * (rest > 0)
        assert lengths == expected
        for i in range(len(task)):
            tokens, labels = task[i]
            assert tokens.dtype == labels.dtype == torch.long
            assert tokens[0] == CLS and labels[0] == IGNORE_INDEX
            original = torch.tensor(byte_tokens(task.chunk(i)))
            selected = labels[1:] != IGNORE_INDEX
            assert selected.any()
            assert torch.equal(labels[1:][selected], original[selected])
            assert torch.equal(tokens[1:][~selected], original[~selected])
            assert ((tokens >= 1) & (tokens <= MASK)).all()


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.text(
            st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
            min_size=1,
            max_size=60,
        ),
        min_size=10,
        max_size=10,
    ),
    st.integers(2, 40),
)
def test_chunks_reassemble_documents(texts, max_len):
    with tempfile.TemporaryDirectory() as folder:
        for i, text in enumerate(texts):
            (Path(folder) / f"{i}.txt").write_bytes(text.encode("utf-8"))
        task = MaskedLMTask("train", data_dir=folder, max_len=max_len)
    examples = iter(range(len(task)))
    for document in task.documents:
        # A document is ceil(bytes / (max_len - 1)) examples in a row; each gives its bytes
        # back: the labels where selected, the tokens elsewhere.
        parts = []
        for _ in range(-(-len(document.text) // (max_len - 1))):
            tokens, labels = task[next(examples)]
            assert len(tokens) == len(labels) <= max_len
            original = torch.where(labels[1:] != IGNORE_INDEX, labels[1:], tokens[1:]) - 2
            parts.append(bytes(original.tolist()))
        assert b"".join(parts) == document.text
    assert next(examples, None) is None


def test_masking_statistics_follow_bert(tmp_path):
    # 184 examples of up to 1023 bytes: 185,796 positions, about 27,900 selected.
    write_corpus(tmp_path, n=10, size=20 * 1023)
    task = MaskedLMTask("train", data_dir=tmp_path, max_len=1024, seed=3)
    tokens, labels = zip(*(task[i] for i in range(len(task))))
    tokens, labels = torch.cat(tokens), torch.cat(labels)
    body = tokens != CLS
    tokens, labels = tokens[body], labels[body]
    selected = labels != IGNORE_INDEX
    n, k = len(labels), int(selected.sum())

    def within(count, total, p, sigmas=5):
        return abs(count - total * p) <= sigmas * math.sqrt(total * p * (1 - p))

    assert within(k, n, 0.15)
    chosen, original = tokens[selected], labels[selected]
    # A random replacement equals the original byte with probability 1/256.
    assert within(int((chosen == MASK).sum()), k, 0.8)
    assert within(int((chosen == original).sum()), k, 0.1 + 0.1 / 256)
    random = chosen[(chosen != MASK) & (chosen != original)]
    assert within(len(random), k, 0.1 * 255 / 256)
    # Random tokens are bytes, uniform over all 256 (not only the 25 the corpus holds).
    assert random.min() == 2 and random.max() == 257
    counts = torch.bincount(random - 2, minlength=256).double()
    expected = len(random) / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 255 + 6 * math.sqrt(2 * 255)  # chi-squared, 255 degrees of freedom: 6 sd


def test_at_least_one_position_selected(tmp_path):
    # One byte per example: selected with probability 0.15 alone, always by the fallback.
    write_corpus(tmp_path, n=10, size=50)
    task = MaskedLMTask("train", data_dir=tmp_path, max_len=2)
    assert len(task) == sum(len(d.text) for d in task.documents) > 400
    for i in range(len(task)):
        tokens, labels = task[i]
        assert labels.tolist() == [IGNORE_INDEX, byte_tokens(task.chunk(i))[0]]


def test_masks_reproducible_per_seed_epoch_index(tmp_path):
    write_corpus(tmp_path)
    train = MaskedLMTask("train", data_dir=tmp_path, max_len=256)
    first = [train[i] for i in range(len(train))]
    again = MaskedLMTask("train", data_dir=tmp_path, max_len=256)
    for i in reversed(range(len(again))):  # random access: no state but the epoch
        assert all(torch.equal(a, b) for a, b in zip(again[i], first[i]))
    assert all(torch.equal(a, b) for a, b in zip(train[-1], first[-1]))
    other_seed = MaskedLMTask("train", data_dir=tmp_path, max_len=256, seed=1)
    assert not torch.equal(other_seed[0][1], first[0][1])
    # Dynamic masks: every epoch masks anew; returning to an epoch gives its masks back.
    train.set_epoch(1)
    epoch1 = [train[i] for i in range(len(train))]
    assert sum(torch.equal(a[1], b[1]) for a, b in zip(first, epoch1)) == 0
    train.set_epoch(0)
    assert all(torch.equal(train[i][1], first[i][1]) for i in range(len(train)))


@pytest.mark.parametrize("split", ["val", "test"])
def test_evaluation_masks_fixed_across_epochs(tmp_path, split):
    write_corpus(tmp_path)
    task = MaskedLMTask(split, data_dir=tmp_path, max_len=256)
    before = [task[i] for i in range(len(task))]
    task.set_epoch(7)
    assert task.epoch == 7
    for i in range(len(task)):
        assert all(torch.equal(a, b) for a, b in zip(task[i], before[i]))


def test_vocabulary_objective_and_collate_attributes(tmp_path):
    write_corpus(tmp_path)
    task = MaskedLMTask("val", data_dir=tmp_path, max_len=64)
    assert (MASK, MaskedLMTask.vocab_size, MaskedLMTask.num_classes) == (258, 259, 259)
    assert task.objective == "masked_lm" and task.collate is collate_masked
    # The classification tasks keep theirs: the loop asks any dataset.
    assert TaskDataset.objective == MultiHop.objective == "classification"
    assert MultiHop.collate is collate
    assert repr(task) == (
        f"MaskedLMTask(split='val', examples={len(task)}, vocab_size=259, num_classes=259, "
        "max_len=64)"
    )
    with pytest.raises(IndexError, match="out of range"):
        task[len(task)]
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        task.set_epoch(-1)
    loader = DataLoader(task, batch_size=4, collate_fn=task.collate)
    tokens, mask, labels = next(iter(loader))
    expected = collate_masked([task[i] for i in range(4)])
    assert all(torch.equal(a, b) for a, b in zip((tokens, mask, labels), expected))


def test_collate_masked_pads_tokens_and_labels():
    batch = [
        (torch.tensor([CLS, 5, MASK]), torch.tensor([-100, -100, 7])),
        (torch.tensor([CLS, MASK, 9, 10, 11]), torch.tensor([-100, 4, -100, -100, 12])),
    ]
    tokens, mask, labels = collate_masked(batch)
    assert tokens.tolist() == [[CLS, 5, MASK, PAD, PAD], [CLS, MASK, 9, 10, 11]]
    assert mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert labels.tolist() == [[-100, -100, 7, -100, -100], [-100, 4, -100, -100, 12]]
    assert tokens.dtype == labels.dtype == torch.long and mask.dtype == torch.bool
    with pytest.raises(ValueError, match="empty batch"):
        collate_masked([])
    with pytest.raises(ValueError, match="example 1 of the batch: 2 tokens but 3 labels"):
        collate_masked([batch[0], (torch.tensor([1, 2]), torch.tensor([-100, 3, 4]))])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"split": "dev"}, ValueError, "split must be one of"),
        ({"max_len": 1}, ValueError, r"max_len must be >= 2 \(CLS and at least one byte\), got 1"),
        ({"max_len": 2.5}, TypeError, "max_len must be an integer"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
        ({"mask_prob": 0.0}, ValueError, r"mask_prob must be a number in \(0, 1\), got 0.0"),
        ({"mask_prob": 1}, ValueError, r"mask_prob must be a number in \(0, 1\), got 1"),
        ({"mask_prob": "0.15"}, ValueError, "mask_prob must be a number"),
        ({"val_fraction": 1.5}, ValueError, r"val_fraction must be a number in \(0, 1\)"),
        ({"test_fraction": 0}, ValueError, r"test_fraction must be a number in \(0, 1\)"),
    ],
)
def test_bad_arguments_refused_before_reading(tmp_path, kwargs, error, message):
    # data_dir does not exist: the argument's error comes first, so nothing was read.
    with pytest.raises(error, match=message):
        MaskedLMTask(**{"split": "train", "data_dir": tmp_path / "missing", **kwargs})


def test_data_errors_reach_the_task(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MaskedLMTask("train", data_dir=tmp_path / "missing")
    (tmp_path / "bad.txt").write_bytes(b"ab\xff")
    with pytest.raises(ValueError, match=r"bad\.txt: not UTF-8 text \(byte 0xff at offset 2"):
        MaskedLMTask("train", data_dir=tmp_path)


def test_default_corpus_is_python_docs():
    task = MaskedLMTask("val", max_len=1024)
    names = {d.name for d in split_documents(python_docs(), "val")}
    assert {d.name for d in task.documents} == names
    first = task.documents[0].text
    assert task.chunk(0) == first[:1023]
    assert len(task) == sum(-(-len(d.text) // 1023) for d in task.documents)


def test_bits_per_character():
    assert bits_per_character(math.log(2)) == pytest.approx(1.0)
    # A model uniform over the 256 bytes needs 8 bits per masked byte.
    loss = float(torch.nn.functional.cross_entropy(torch.zeros(3, 256), torch.tensor([0, 5, 9])))
    assert bits_per_character(loss) == pytest.approx(8.0)
    assert bits_per_character(0.0) == 0.0
