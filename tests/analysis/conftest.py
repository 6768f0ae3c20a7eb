"""Shared fixtures of the analysis tests."""

import numpy as np
import pytest


@pytest.fixture
def synthetic_attention():
    return _synthetic_attention


def _synthetic_attention(n, heads, seed):
    """Row-stochastic attention on a window + random pattern, as edge weights [E, H]."""
    rng = np.random.default_rng(seed)
    mask = (np.abs(np.subtract.outer(np.arange(n), np.arange(n))) <= 2) | (
        rng.random((n, n)) < 4 / n
    )
    dst, src = np.nonzero(mask)  # mask[i, j]: i attends j
    logits = rng.normal(size=(src.size, heads))
    weights = np.exp(logits)
    weights /= np.stack(
        [np.bincount(dst, weights=weights[:, h], minlength=n) for h in range(heads)], 1
    )[dst]
    return np.stack([src, dst]), weights
