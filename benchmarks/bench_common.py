"""What the benchmark scripts share: the layers they time, the command line that reruns them,
workloads alternated round by round in one process (so that a drift of the machine hits all of
them alike), and growth between two lengths."""

from __future__ import annotations

import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Hashable, List, Optional, Sequence, Tuple, TypeVar

Key = TypeVar("Key", bound=Hashable)


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def diffuser_layer(width: int, heads: int, hops: int = 5, alpha: float = 0.1):
    """The whole layer the benchmarks time: a ``DiffuserLayer`` of hidden size ``width`` with a
    feed-forward block of width ``4 width`` and no dropout."""
    from graphdiff.models import DiffuserConfig, DiffuserLayer

    return DiffuserLayer(
        DiffuserConfig(
            hidden=width,
            heads=heads,
            ffn=4 * width,
            hops=hops,
            alpha=alpha,
            dropout=0.0,
            attention_dropout=0.0,
        )
    )


def sdpa_transformer_layer(width: int, heads: int):
    """:func:`diffuser_layer`'s architecture (post-LN, GELU, feed-forward width ``4 width``,
    no dropout) with dense attention, which torch runs with ``scaled_dot_product_attention``."""
    import torch

    return torch.nn.TransformerEncoderLayer(
        width, heads, dim_feedforward=4 * width, dropout=0.0, activation="gelu", batch_first=True
    )


def rerun_command(script: str, argv: Optional[Sequence[str]] = None) -> str:
    """The shell command that reruns ``benchmarks/<script>`` with ``argv`` (default: this
    process's arguments), for the header of a results file."""
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", str(Path("benchmarks") / script), *args])


def alternate(
    runs: Dict[Key, Callable[[], object]],
    rounds: int,
    after_round: Optional[Callable[[int], object]] = None,
) -> Dict[Key, List[float]]:
    """Seconds of every run in every round. The order rotates by one run per round, so that
    no run always follows the same one. ``after_round(r)`` is called after round ``r``
    (counted from 1), to show progress."""
    times: Dict[Key, List[float]] = {key: [] for key in runs}
    keys = list(runs)
    for round_ in range(rounds):
        for i in range(len(keys)):
            key = keys[(i + round_) % len(keys)]
            start = time.perf_counter()
            runs[key]()
            times[key].append(time.perf_counter() - start)
        if after_round is not None:
            after_round(round_ + 1)
    return times


def paired_ratios(num: List[float], den: List[float]) -> Tuple[float, float]:
    """(median of the per-round ratios, ratio of the fastest runs) of two workloads timed in
    the same rounds of :func:`alternate`: each round's runs ran close together (the order
    rotates), so drift mostly cancels in the ratio."""
    return (statistics.median(a / b for a, b in zip(num, den)), min(num) / min(den))


def growth_row(name: str, small: List[float], large: List[float]) -> str:
    """``| name | fastest ms at the small length | at the large one | growth of the fastest |
    growth of the median |``."""
    return (
        f"| {name} | {min(small) * 1e3:.1f} | {min(large) * 1e3:.1f} | "
        f"{min(large) / min(small):.2f} | "
        f"{statistics.median(large) / statistics.median(small):.2f} |"
    )
