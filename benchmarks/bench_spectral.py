"""Time and memory of ``analysis.spectral_gap`` on a pattern against the sequence length.

    python benchmarks/bench_spectral.py [--pattern diffuser] [--n 4096 16384 65536 131072]

Each length runs in a fresh subprocess so that its peak resident memory (ru_maxrss) is its own.
Prints a markdown table: edges, time to build the pattern graph, time to solve for lambda_2,
the solver used, peak memory, and peak memory per edge (flat when memory is O(edges)).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from graphdiff.cli_types import positive_int


def measure(pattern: str, n: int) -> dict:
    """Runs in the child: build, solve, report."""
    import analysis
    from analysis.spectral import extremes
    from graphdiff.patterns import parse_pattern

    start = time.perf_counter()
    graph = analysis.as_graph(parse_pattern(pattern), n)
    _ = graph.adjacency  # the symmetrised simple graph is part of the build
    built = time.perf_counter()
    result = extremes(graph, 2, 0)  # what spectral_gap runs, with the solver it chose
    solved = time.perf_counter()
    gap, method = float(result.smallest[1]), result.method
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    return {
        "n": n,
        "edges": graph.num_edges,
        "build_s": built - start,
        "gap_s": solved - built,
        "lambda_2": gap,
        "method": method,
        "peak_bytes": peak,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pattern", default="diffuser", help="pattern expression or preset name")
    parser.add_argument("--n", type=positive_int, nargs="+", default=[4096, 16384, 65536, 131072])
    args = parser.parse_args(argv)
    print(f"pattern: {args.pattern}\n")
    print(
        "| n | edges | build (s) | lambda_2 (s) | lambda_2 | solver | peak memory (MiB) "
        "| bytes / edge |"
    )
    print("|---:|---:|---:|---:|---:|---|---:|---:|")
    for n in args.n:
        child = subprocess.run(
            [sys.executable, __file__, "--child", args.pattern, str(n)],
            check=True,
            capture_output=True,
            text=True,
        )
        row = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"| {row['n']} | {row['edges']:,} | {row['build_s']:.1f} | {row['gap_s']:.1f} | "
            f"{row['lambda_2']:.5f} | {row['method']} | {row['peak_bytes'] / 2**20:,.0f} | "
            f"{row['peak_bytes'] / row['edges']:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]))))
        sys.exit(0)
    sys.exit(main())
