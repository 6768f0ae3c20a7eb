"""Time the fused core at two git revisions, alternating fresh processes.

    python benchmarks/compare_revisions.py facda3a HEAD [--n 16384 65536] [--rounds 3]

On a shared machine the speed drifts by tens of percent within minutes, so two revisions are
only comparable when their runs interleave. Each revision is checked out (``git worktree``)
into a temporary directory; every round runs each revision once in a new process started in
its checkout (the order alternates from round to round, so that neither always runs first),
which times one forward + backward of ``edge_softmax_attention`` + ``diffuse`` (8 heads x 32
channels, K = 5, ``Window(64) | Global(16) | Random(16)``) ``--repeats`` times after a warm-up
at each length. Prints, per revision and length, the fastest and the median time over all rounds and
the growth between consecutive lengths.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

from bench_common import positive_int

ROOT = Path(__file__).resolve().parents[1]

STEP = """
import json, sys, time, warnings
import torch
import graphdiff
from graphdiff.nn.functional import diffuse, edge_softmax_attention
from graphdiff.patterns import Global, Random, Window
warnings.filterwarnings("ignore")
lengths, repeats = json.loads(sys.argv[1]), int(sys.argv[2])
times = {}
for n in lengths:
    edge_index = (Window(64) | Global(16) | Random(16, seed=0))(n)
    q, k, v = (torch.randn(n, 8, 32, requires_grad=True) for _ in range(3))
    def step():
        diffuse(edge_softmax_attention(q, k, edge_index, n), v, edge_index, 5, 0.1).sum().backward()
    step()
    times[n] = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times[n].append(time.perf_counter() - start)
print(json.dumps({"graphdiff": graphdiff.__file__, "times": times}))
"""


def time_revision(tree: str, lengths: List[int], repeats: int) -> Dict[int, List[float]]:
    """Seconds of every step at every length, timed by a new process on the checkout ``tree``.

    The process starts in ``tree``: ``python -c`` puts its working directory first on
    ``sys.path``, so a process started in this repository would import this checkout's
    graphdiff whatever ``PYTHONPATH`` says. It reports the graphdiff it imported, which must
    be ``tree``'s."""
    out = subprocess.run([sys.executable, "-c", STEP, json.dumps(lengths), str(repeats)],
                         cwd=tree, env=dict(os.environ, PYTHONPATH=tree), check=True,
                         capture_output=True, text=True).stdout
    result = json.loads(out.splitlines()[-1])
    imported = Path(result["graphdiff"]).resolve()
    if Path(tree).resolve() not in imported.parents:
        raise RuntimeError(f"the process for {tree} imported {imported}")
    return {int(n): ts for n, ts in result["times"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("revisions", nargs=2)
    parser.add_argument("--n", nargs="+", type=positive_int, default=[16384, 65536])
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--repeats", type=positive_int, default=3)
    args = parser.parse_args()
    times = {rev: {n: [] for n in args.n} for rev in args.revisions}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for i, rev in enumerate(args.revisions):
            trees[rev] = os.path.join(tmp, f"rev{i}")
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                            trees[rev], rev], check=True)
        try:
            for round_ in range(args.rounds):
                for rev in args.revisions[round_ % 2:] + args.revisions[:round_ % 2]:
                    for n, ts in time_revision(trees[rev], args.n, args.repeats).items():
                        times[rev][n].extend(ts)
                    print(f"round {round_ + 1}/{args.rounds} {rev}: done", file=sys.stderr)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", tree],
                               check=False)
    print("| revision | n | fastest s | median s | growth (fastest) | growth (median) |")
    print("|---|---:|---:|---:|---:|---:|")
    for rev in args.revisions:
        previous = None
        for n in args.n:
            best, median = min(times[rev][n]), statistics.median(times[rev][n])
            growth = (f"{best / previous[0]:.2f} | {median / previous[1]:.2f}"
                      if previous else "- | -")
            print(f"| {rev} | {n} | {best:.3f} | {median:.3f} | {growth} |")
            previous = (best, median)


if __name__ == "__main__":
    main()
