"""Time the fused core at two git revisions, alternating fresh processes.

    python benchmarks/compare_revisions.py facda3a HEAD [--n 16384 65536] [--rounds 3]

On a shared machine the speed drifts by tens of percent within minutes, so two revisions are
only comparable when their runs interleave. Each revision is checked out (``git worktree``)
into a temporary directory; every round runs each revision once in a new process, which times
one forward + backward of ``edge_softmax_attention`` + ``diffuse`` (8 heads x 32 channels,
K = 5, ``Window(64) | Global(16) | Random(16)``) ``--repeats`` times after a warm-up at each
length. Prints, per revision and length, the fastest and the median time over all rounds and
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

ROOT = Path(__file__).resolve().parents[1]

STEP = """
import json, sys, time, warnings
import torch
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
print(json.dumps(times))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("revisions", nargs=2)
    parser.add_argument("--n", nargs="+", type=int, default=[16384, 65536])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
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
                for rev in args.revisions:
                    out = subprocess.run(
                        [sys.executable, "-c", STEP, json.dumps(args.n), str(args.repeats)],
                        env=dict(os.environ, PYTHONPATH=trees[rev]), check=True,
                        capture_output=True, text=True).stdout
                    for n, ts in json.loads(out.splitlines()[-1]).items():
                        times[rev][int(n)].extend(ts)
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
