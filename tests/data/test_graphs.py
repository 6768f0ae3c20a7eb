"""Sequences as graphs and batches: offsets, variable lengths, masks and the padded inverse."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Batch, Data

from graphdiff.data import AddPattern, graph_batch, sequence_graph, to_padded
from graphdiff.data.graphs import as_bool_mask
from graphdiff.patterns import Global, Random, Window

PATTERN = Window(4) | Global(1) | Random(2, seed=1)


def reference_batch(padded, lengths, pattern):
    """PyG's own batching of per-sequence graphs: the independent reference."""
    return Batch.from_data_list(
        [sequence_graph(padded[b, :length], pattern) for b, length in enumerate(lengths)]
    )


def test_sequence_graph():
    tokens = torch.tensor([5, 6, 7, 8, 9])
    data = sequence_graph(tokens, PATTERN)
    assert torch.equal(data.x, tokens) and torch.equal(data.pos, torch.arange(5))
    assert torch.equal(data.edge_index, PATTERN(5))
    with pytest.raises(ValueError, match="non-empty"):
        sequence_graph(torch.tensor([], dtype=torch.long), PATTERN)
    with pytest.raises(TypeError, match="pattern must be"):
        sequence_graph(tokens, "Window(4)")


def test_add_pattern_transform():
    transform = AddPattern(PATTERN)
    data = transform(Data(x=torch.randn(6, 3)))
    assert torch.equal(data.edge_index, PATTERN(6)) and torch.equal(data.pos, torch.arange(6))
    assert repr(transform) == "AddPattern(Window(4) | Global(1) | Random(2, seed=1))"


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 12), min_size=1, max_size=6), features=st.booleans())
def test_graph_batch_equals_pyg_batching(lengths, features):
    max_len = max(lengths)
    shape = (len(lengths), max_len, 3) if features else (len(lengths), max_len)
    padded = torch.randn(shape) if features else torch.randint(1, 50, shape)
    expected = reference_batch(padded, lengths, PATTERN)
    mask = torch.arange(max_len) < torch.tensor(lengths).unsqueeze(1)
    # 0/1 numbers: Hugging Face's attention_mask
    for second in (torch.tensor(lengths), mask, mask.long(), mask.float()):
        batch = graph_batch(padded, second, PATTERN)
        for key in ("x", "edge_index", "pos", "batch", "ptr"):
            assert torch.equal(batch[key], expected[key]), key
        assert batch.num_graphs == len(lengths)
        for got, want in zip(batch.to_data_list(), expected.to_data_list()):
            assert torch.equal(got.edge_index, want.edge_index) and torch.equal(got.x, want.x)
        # to_padded is the inverse for right padding
        back, mask = to_padded(batch.x, batch)
        assert torch.equal(mask, torch.arange(max_len) < torch.tensor(lengths).unsqueeze(1))
        assert torch.equal(back[mask], padded[mask])
        assert back.shape[:2] == (len(lengths), max_len)


def test_equal_lengths_reuse_the_cached_pattern_with_offsets():
    padded = torch.randint(0, 9, (3, 7))
    batch = graph_batch(padded, torch.tensor([7, 7, 7]), PATTERN)
    edges = PATTERN(7)
    assert torch.equal(batch.edge_index, torch.cat([edges + 7 * b for b in range(3)], dim=1))


def test_batched_edges_are_kept_only_for_lengths_that_come_back(fresh_cache):
    padded = torch.randint(0, 9, (3, 9))
    for lengths in ([9, 4, 6], [5, 9, 2], [3, 3, 9]):  # each once: no batch kept
        graph_batch(padded, torch.tensor(lengths), PATTERN)
    assert not [key for key in fresh_cache.entries if key[0] == "batched"]
    first = graph_batch(padded, torch.tensor([9, 4, 6]), PATTERN).edge_index  # back: kept
    assert graph_batch(padded, torch.tensor([9, 4, 6]), PATTERN).edge_index is first
    fresh_cache.set_budget(first.numel() * first.element_size() + 600)
    assert fresh_cache.bytes <= fresh_cache.max_bytes


def test_left_padding_mask_gives_positions_inside_each_sequence():
    padded = torch.tensor([[0, 0, 3, 4], [5, 6, 7, 8]])
    mask = padded != 0
    batch = graph_batch(padded, mask, Window(2))
    assert batch.x.tolist() == [3, 4, 5, 6, 7, 8]
    assert batch.pos.tolist() == [0, 1, 0, 1, 2, 3]
    back, back_mask = to_padded(batch.x, batch.batch)
    assert back.tolist() == [[3, 4, 0, 0], [5, 6, 7, 8]]  # compacted to the right padding
    padded_more, _ = to_padded(batch.x, batch, max_len=6, fill_value=-1)
    assert padded_more[0].tolist() == [3, 4, -1, -1, -1, -1]


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((torch.zeros(2, 3), torch.tensor([3, 4])), ValueError, r"lengths must lie in \[0, 3\]"),
        ((torch.zeros(2, 3), torch.tensor([3, 0])), ValueError, "at least one token"),
        ((torch.zeros(2, 3), torch.tensor([3.0, 1.0])), ValueError, r"or integer lengths \[B\]"),
        ((torch.zeros(2, 3), torch.ones(2)), ValueError, r"a mask \[B, L\] \(boolean, or"),
        ((torch.zeros(2, 3), torch.full((2, 3), 2)), ValueError, "only 0 and 1"),
        ((torch.zeros(2, 3), torch.full((2, 3), 0.5)), ValueError, "only 0 and 1"),
        ((torch.zeros(2, 3), torch.ones(2, 4, dtype=torch.long)), ValueError, r"shape \[B, L\]"),
        (
            (torch.zeros(2, 3), torch.ones(2, 4, dtype=torch.bool)),
            ValueError,
            r"mask must have shape \[B, L\]",
        ),
        ((torch.zeros(3), torch.tensor([3])), ValueError, "padded must be"),
    ],
)
def test_graph_batch_rejects_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        graph_batch(*args, PATTERN)


@pytest.mark.parametrize(
    "mask",
    [
        torch.tensor([[1, 0, 1]]),
        torch.tensor([[1.0, 0.0, 1.0]]),
        torch.tensor([[1, 0, 1]], dtype=torch.uint8),
        torch.tensor([[True, False, True]]),
    ],
)
def test_as_bool_mask_reads_zero_one_numbers_as_booleans(mask):
    assert torch.equal(as_bool_mask(mask), torch.tensor([[True, False, True]]))


@pytest.mark.parametrize(
    "mask",
    [
        torch.tensor([[1, 2]]),
        torch.tensor([[1.0, float("nan")]]),
        torch.tensor([[0.5, 1.0]]),
        torch.tensor([[1, -1]]),
        torch.tensor([[1 + 0j, 0j]]),
    ],
)
def test_as_bool_mask_refuses_other_values(mask):
    with pytest.raises(ValueError, match="only 0 and 1"):
        as_bool_mask(mask)


def test_to_padded_rejects_bad_input():
    with pytest.raises(ValueError, match="batch vector"):
        to_padded(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="max_len=1 is shorter"):
        to_padded(torch.zeros(4), torch.tensor([0, 0, 1, 1]), max_len=1)


@pytest.mark.parametrize(
    "x, vector, max_len, error, match",
    [
        # Unsorted: the ranks inside each sequence would be wrong, silently.
        (torch.arange(3.0), torch.tensor([0, 1, 0]), 3, ValueError, "sorted"),
        (torch.arange(3.0), torch.tensor([-1, 0, 0]), None, ValueError, "non-negative"),
        (torch.arange(3.0), torch.tensor([0.0, 0.0, 1.0]), None, TypeError, "integer batch vector"),
        (torch.arange(3.0), [0, 0, 1], None, TypeError, "integer batch vector"),
        ([1.0, 2.0, 3.0], torch.tensor([0, 0, 1]), None, TypeError, "x must be a tensor"),
        (torch.arange(3.0), torch.tensor([0, 0, 1]), 2.5, TypeError, "max_len must be an integer"),
    ],
)
def test_to_padded_names_the_bad_argument(x, vector, max_len, error, match):
    with pytest.raises(error, match=match):
        to_padded(x, vector, max_len=max_len)
