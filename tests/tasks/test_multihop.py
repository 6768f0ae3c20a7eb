"""MultiHop: the key lies outside the one-hop-per-layer receptive field and inside diffusion's."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from graphdiff.tasks import CLS, NUM_SPECIAL, MultiHop, get_task


def reachable(length, window, steps):
    """Positions whose token can reach position 0 in `steps` hops of Window(window) (BFS)."""
    neighbours = {i: [j for j in range(length) if abs(i - j) <= window // 2] for i in range(length)}
    seen = frontier = {0}
    for _ in range(steps):
        frontier = {j for i in frontier for j in neighbours[i]} - seen
        seen = seen | frontier
    return seen


@settings(max_examples=20, deadline=None)
@given(
    length=st.integers(40, 96),
    window=st.sampled_from([2, 4, 6, 8]),
    layers=st.integers(1, 3),
    seed=st.integers(0, 1000),
)
def test_key_is_beyond_one_hop_and_within_diffusion(length, window, layers, seed):
    reach = layers * (window // 2)
    if 2 * reach >= length:  # the default distance window does not fit this length
        return
    ds = MultiHop(
        "train", num_samples=6, seed=seed, length=length, window=window, layers=layers, hops=5
    )
    one_hop = reachable(length, window, layers)
    diffusion = reachable(length, window, 5 * layers)
    for i in range(len(ds)):
        tokens, label = ds[i]
        keys = (tokens >= NUM_SPECIAL + ds.num_fillers).nonzero().flatten().tolist()
        assert len(tokens) == length and tokens[0] == CLS and len(keys) == 1
        (position,) = keys
        assert int(tokens[position]) - NUM_SPECIAL - ds.num_fillers == label
        assert position not in one_hop and position in diffusion
        # what one hop per layer sees is CLS and fillers only: independent of the label
        assert all(
            NUM_SPECIAL <= int(tokens[p]) < NUM_SPECIAL + ds.num_fillers for p in one_hop - {0}
        )


def test_defaults():
    ds = get_task("multihop", "test")
    assert (len(ds), ds.max_len, ds.vocab_size, ds.num_classes) == (1000, 128, 20, 10)
    assert (ds.one_hop_reach, ds.diffusion_reach) == (8, 40)
    assert (ds.min_distance, ds.max_distance) == (9, 16)
    labels = [ds[i][1] for i in range(200)]
    assert set(labels) == set(range(10))  # every class occurs


def test_reproducible_and_distinct_splits():
    a, b, c = MultiHop("train", seed=3), MultiHop("train", seed=3), MultiHop("val", seed=3)
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(5))
    assert not all(torch.equal(a[i][0], c[i][0]) for i in range(5))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_distance=41, length=128), "diffusion reach 40"),
        (dict(length=9), "max_distance must be >= 9"),
        (dict(max_len=100), "128 tokens .*exceeds max_len=100"),
        (dict(max_len=12, truncate=True), "last position 11"),
        (dict(window=1), "window must be >= 2"),
        (dict(num_values=1), "num_values must be >= 2"),
    ],
)
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiHop("train", **kwargs)


def test_truncate_keeps_the_key():
    ds = MultiHop("train", num_samples=10, max_len=20, truncate=True)
    for i in range(10):
        tokens, _ = ds[i]
        assert len(tokens) == 20 and int(tokens.max()) >= NUM_SPECIAL + ds.num_fillers
