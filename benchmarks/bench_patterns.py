"""Pattern construction time and size against sequence length.

    python benchmarks/bench_patterns.py [--lengths 4096 16384 ...] [--patterns EXPR ...]

Each (pattern, n) is built from scratch (the per-length cache is cleared) and timed once; the
table lists wall time, edges and edges per token.
"""

from __future__ import annotations

import argparse
import time
from typing import List, Optional

import graphdiff.cache
from graphdiff.cli_types import positive_int
from graphdiff.patterns import parse_pattern

DEFAULT_PATTERNS = [
    "Window(64) | Global(2) | Random(3)",
    "diffuser",
    "bigbird",
    "longformer(window=512)",
]
DEFAULT_LENGTHS = [4096, 16384, 65536, 131072, 262144, 1_048_576]
# Past these lengths a pattern has too many edges for a quick benchmark on 24 GB.
MAX_LENGTH = {"diffuser": 262_144, "bigbird": 262_144, "longformer(window=512)": 262_144}


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patterns", nargs="+", default=DEFAULT_PATTERNS)
    parser.add_argument("--lengths", nargs="+", type=positive_int, default=DEFAULT_LENGTHS)
    args = parser.parse_args(argv)

    print("| pattern | n | seconds | edges | edges / token |")
    print("|---|---:|---:|---:|---:|")
    for text in args.patterns:
        pattern = parse_pattern(text)
        for n in args.lengths:
            if n > MAX_LENGTH.get(text, n):
                continue
            graphdiff.cache.clear()
            start = time.perf_counter()
            edges = pattern.num_edges(n)
            seconds = time.perf_counter() - start
            print(f"| `{text}` | {n:,} | {seconds:.2f} | {edges:,} | {edges / n:.1f} |", flush=True)
    graphdiff.cache.clear()


if __name__ == "__main__":
    main()
