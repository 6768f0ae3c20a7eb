"""What the probes share: their command line, workloads alternated round by round in one
process (so that a drift of the machine hits all of them alike), and growth between two
lengths."""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, Hashable, List, TypeVar

Key = TypeVar("Key", bound=Hashable)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def probe_parser(doc: str) -> argparse.ArgumentParser:
    """The probes' common options: two lengths, the shape of the heads, and the rounds."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--n", type=positive_int, nargs=2, default=[16384, 65536])
    parser.add_argument("--heads", type=positive_int, default=8)
    parser.add_argument("--channels", type=positive_int, default=32)
    parser.add_argument("--rounds", type=positive_int, default=10)
    return parser


def alternate(runs: Dict[Key, Callable[[], object]], rounds: int) -> Dict[Key, List[float]]:
    """Seconds of every run in every round. The order rotates by one run per round, so that
    no run always follows the same one."""
    times: Dict[Key, List[float]] = {key: [] for key in runs}
    keys = list(runs)
    for round_ in range(rounds):
        for i in range(len(keys)):
            key = keys[(i + round_) % len(keys)]
            start = time.perf_counter()
            runs[key]()
            times[key].append(time.perf_counter() - start)
    return times


def growth_row(name: str, small: List[float], large: List[float]) -> str:
    """``| name | fastest ms at the small length | at the large one | growth of the fastest |
    growth of the median |``."""
    return (f"| {name} | {min(small) * 1e3:.1f} | {min(large) * 1e3:.1f} | "
            f"{min(large) / min(small):.2f} | "
            f"{statistics.median(large) / statistics.median(small):.2f} |")
