"""The shared task interface: collate, seeding, length checks, registry, import hygiene."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import graphdiff.tasks as tasks
from graphdiff.tasks import CLS, PAD, SPLITS, TASKS, MultiHop, collate, get_task
from graphdiff.tasks.base import check_length, example_rng


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.lists(st.integers(2, 50), min_size=1, max_size=12), st.integers(0, 9)),
        min_size=1,
        max_size=6,
    )
)
def test_collate_pads_masks_and_keeps_tokens(examples):
    batch = [(torch.tensor(tokens), label) for tokens, label in examples]
    tokens, mask, labels = collate(batch)
    longest = max(len(t) for t, _ in examples)
    assert tokens.shape == mask.shape == (len(examples), longest)
    assert tokens.dtype == labels.dtype == torch.long and mask.dtype == torch.bool
    for row, (seq, label) in enumerate(examples):
        assert mask[row].tolist() == [True] * len(seq) + [False] * (longest - len(seq))
        assert tokens[row, : len(seq)].tolist() == seq
        assert (tokens[row, len(seq) :] == PAD).all()
        assert labels[row] == label


def test_collate_rejects_empty_batch():
    with pytest.raises(ValueError, match="empty"):
        collate([])


def test_example_rng_is_reproducible_and_distinct_per_split():
    draws = {split: example_rng(0, split, 3).integers(1 << 30, size=4).tolist() for split in SPLITS}
    assert draws["train"] == example_rng(0, "train", 3).integers(1 << 30, size=4).tolist()
    assert len({tuple(d) for d in draws.values()}) == 3
    assert draws["train"] != example_rng(1, "train", 3).integers(1 << 30, size=4).tolist()
    assert draws["train"] != example_rng(0, "train", 4).integers(1 << 30, size=4).tolist()


def test_check_length():
    check_length(10, 10, truncate=False, where="x")
    check_length(11, 10, truncate=True, where="x")
    with pytest.raises(ValueError, match=r"somewhere.*11 tokens.*max_len=10.*truncate=True"):
        check_length(11, 10, truncate=False, where="somewhere")


def test_get_task_unknown_name_lists_valid_names():
    with pytest.raises(
        ValueError, match="image, listops, mlm, multihop, pathfinder, retrieval, text"
    ):
        get_task("listopz", "train")
    assert set(TASKS) == {"listops", "image", "mlm", "multihop", "pathfinder", "retrieval", "text"}


def test_get_task_unknown_split():
    with pytest.raises(ValueError, match="split must be one of"):
        get_task("multihop", "dev")


def test_dataset_interface_and_indexing():
    ds = get_task("multihop", "val", num_samples=5)
    assert isinstance(ds, MultiHop) and len(ds) == 5
    tokens, label = ds[-1]
    assert torch.equal(tokens, ds[4][0]) and label == ds[4][1]
    assert tokens[0] == CLS and tokens.dtype == torch.long and isinstance(label, int)
    assert len(tokens) <= ds.max_len and 0 <= label < ds.num_classes
    assert int(tokens.max()) < ds.vocab_size
    with pytest.raises(IndexError):
        ds[5]
    assert "MultiHop(split='val', examples=5" in repr(ds)


def test_task_modules_do_not_import_torch_geometric():
    for path in Path(tasks.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "torch_geometric" for n in names), path


def test_batches_from_a_dataloader():
    ds = MultiHop("train", num_samples=8, length=32, window=4, layers=2)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate)
    tokens, mask, labels = next(iter(loader))
    assert tokens.shape == (4, 32) and bool(mask.all()) and labels.shape == (4,)
    assert np.array_equal(tokens[:, 0].numpy(), [CLS] * 4)
