"""Sparse attention patterns as graphs.

>>> from graphdiff.patterns import Window, Global, Random
>>> p = Window(64) | Global(2) | Random(3, seed=0)
>>> edge_index = p(4096)          # canonical [2, E], cached per length
"""

from graphdiff.checks import check_edge_index
from graphdiff.patterns.base import MAX_DENSE_NODES, Pattern, canonicalize
from graphdiff.patterns.blocks import (
    BlockRandom,
    BlockWindow,
    Full,
    Global,
    Random,
    Strided,
    Window,
)
from graphdiff.patterns.custom import Custom
from graphdiff.patterns.ops import Causal, Intersection, PatternUnion, Symmetric
from graphdiff.patterns.parse import parse_pattern
from graphdiff.patterns.presets import (
    PATTERN_PRESETS,
    bigbird,
    diffuser,
    longformer,
    sparse_transformer,
)
from graphdiff.patterns.stats import PatternStats, pattern_stats

__all__ = [
    "Pattern",
    "canonicalize",
    "MAX_DENSE_NODES",
    "Window",
    "BlockWindow",
    "Global",
    "Random",
    "BlockRandom",
    "Strided",
    "Full",
    "Custom",
    "PatternUnion",
    "Intersection",
    "Causal",
    "Symmetric",
    "diffuser",
    "longformer",
    "bigbird",
    "sparse_transformer",
    "PATTERN_PRESETS",
    "parse_pattern",
    "check_edge_index",
    "pattern_stats",
    "PatternStats",
]
