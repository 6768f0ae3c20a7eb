"""The patterns of published sparse transformers, as compositions of building blocks."""

from __future__ import annotations

from typing import Sequence

from graphdiff.checks import check_int
from graphdiff.patterns.base import Pattern
from graphdiff.patterns.blocks import BlockRandom, BlockWindow, Global, Random, Strided, Window


def diffuser(
    window: int = 64, num_global: int = 64, num_random: int = 64, seed: int = 0
) -> Pattern:
    """Diffuser's pattern (Feng et al., 2023): the official block window, ``num_global`` global
    tokens at the start and ``num_random`` random keys per query."""
    return BlockWindow(window) | Global(num_global) | Random(num_random, seed=seed)


def longformer(window: int = 512, global_indices: Sequence[int] = (0,)) -> Pattern:
    """Longformer (Beltagy et al., 2020): a sliding window plus task-specific global tokens."""
    return Window(window) | Global(indices=global_indices)


def bigbird(
    block: int = 64, num_random_blocks: int = 3, num_global_blocks: int = 2, seed: int = 0
) -> Pattern:
    """BigBird-ITC (Zaheer et al., 2020): blocks of ``block`` tokens; each query block attends
    itself and its two neighbours, ``num_random_blocks`` random blocks, and the global blocks.

    As in BigBird the global blocks sit at both ends: the first ``ceil(g / 2) * block`` and the
    last ``floor(g / 2) * block`` tokens for ``g = num_global_blocks`` (every token, when the
    sequence is shorter than that). When ``n`` is not a multiple of ``block`` the last global
    tokens are not aligned to the window's blocks; BigBird itself requires multiples.
    """
    block = check_int("block", block, low=1)
    num_global_blocks = check_int("num_global_blocks", num_global_blocks, low=0)
    head = (num_global_blocks + 1) // 2 * block
    tail = num_global_blocks // 2 * block
    pattern = BlockWindow(2 * block) | BlockRandom(block, num_random_blocks, seed=seed)
    if head + tail:
        pattern = pattern | Global(head, last=tail)
    return pattern


def sparse_transformer(stride: int = 128) -> Pattern:
    """The Sparse Transformer's strided pattern (Child et al., 2019), bidirectional; add
    ``.causal()`` for the original autoregressive form."""
    return Strided(stride)


PATTERN_PRESETS = {
    "diffuser": diffuser,
    "longformer": longformer,
    "bigbird": bigbird,
    "sparse_transformer": sparse_transformer,
}
