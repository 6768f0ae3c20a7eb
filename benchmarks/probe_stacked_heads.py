"""Heads stacked into one block-diagonal sparse call against one call per head.

    python benchmarks/probe_stacked_heads.py [--n 256 1024 2048 4096 16384] [--rounds 40]
        [--out DIR]

On short sequences every sparse call of the kernels carries about 10-15 us of Python and
dispatch besides its work, so graphdiff stacks heads into the block-diagonal graph of
:meth:`DiffusionGraph.stacked` while the stack holds at most ``MAX_STACKED_EDGES`` edges
(:meth:`DiffusionGraph.heads_per_call`). This probe times, alternated round by round in one
process, the default (stacked where the rule says so) against every head in its own call
(``MAX_STACKED_EDGES = 0``), at each length:

- ``core``: forward + backward of ``edge_softmax_attention`` + ``diffuse`` (K = 5) on
  node-major ``[N, H, C]`` features, as a PyG layer hands them over;
- ``hop``: one hop without gradient on head-major features (the bench's ``hop`` variant).

It prints (and with ``--out`` writes to ``DIR/probe_stacked_heads.md``) the fastest and median
time of each and their ratio, stacked / per head, with the heads per call the rule chose.
"""
from __future__ import annotations

import statistics
import warnings
from pathlib import Path
from typing import Callable, Dict, Tuple

import torch

from bench_common import alternate, probe_parser, rerun_command
from graphdiff.io import atomic_write_text
from graphdiff.nn import diffusion_graph
from graphdiff.nn import graph as graph_module
from graphdiff.nn.functional import diffuse, edge_softmax_attention
from graphdiff.patterns import Global, Random, Window

WAYS = {"stacked": graph_module.MAX_STACKED_EDGES, "per head": 0}


def workloads(n: int, heads: int, channels: int) -> Tuple[Dict[Tuple[str, str], Callable], int]:
    """``({(workload, way): run}, heads per call of the stacked way)``; each run computes
    under its way's stacking limit and returns what it computed (the core: the gradient of
    ``q``; the hop: its output)."""
    torch.manual_seed(0)
    edge_index = (Window(64) | Global(16) | Random(16, seed=0))(n)
    graph = diffusion_graph(edge_index, (n, n))
    graph.transposed()
    q, k, v = (torch.randn(n, heads, channels, requires_grad=True) for _ in range(3))
    attn, values = torch.rand(heads, graph.num_edges), torch.randn(heads, n, channels)

    def core() -> torch.Tensor:
        q.grad = None
        out = diffuse(edge_softmax_attention(q, k, edge_index, n), v, edge_index, 5, 0.1)
        out.sum().backward()
        return q.grad

    def hop() -> torch.Tensor:
        with torch.no_grad():
            return diffuse(attn.t(), values.transpose(0, 1), graph, 1, 0.1)

    def with_limit(run: Callable, limit: int) -> Callable:
        def limited():
            default = graph_module.MAX_STACKED_EDGES
            graph_module.MAX_STACKED_EDGES = limit
            try:
                return run()
            finally:
                graph_module.MAX_STACKED_EDGES = default
        return limited

    runs = {(name, way): with_limit(run, limit) for name, run in (("core", core), ("hop", hop))
            for way, limit in WAYS.items()}
    return runs, graph.heads_per_call(heads)


def main() -> None:
    parser = probe_parser(__doc__, lengths=(256, 1024, 2048, 4096, 16384), nargs="+")
    parser.set_defaults(rounds=40)  # differences of 10-30% at milliseconds need many rounds
    parser.add_argument("--out", type=Path, default=None, help="write the table to this folder")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Sparse")
    lines = [f"| n | workload | heads per call | per head ms (fastest / median of {args.rounds}) "
             "| stacked ms | stacked / per head (fastest / median) |", "|---|---|---:|---|---|---|"]
    for n in args.n:
        runs, per_call = workloads(n, args.heads, args.channels)
        alternate(runs, 1)  # warm-up
        times = alternate(runs, args.rounds)
        for name in ("core", "hop"):
            alone, stacked = times[name, "per head"], times[name, "stacked"]
            lines.append(
                f"| {n} | {name} | {per_call} | {min(alone) * 1e3:.2f} / "
                f"{statistics.median(alone) * 1e3:.2f} | {min(stacked) * 1e3:.2f} / "
                f"{statistics.median(stacked) * 1e3:.2f} | {min(stacked) / min(alone):.2f} / "
                f"{statistics.median(stacked) / statistics.median(alone):.2f} |")
            print(lines[-1], flush=True)
    if args.out:
        setting = (f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
                   f"H={args.heads}, C={args.channels}, K=5, Window(64) | Global(16) | "
                   f"Random(16); MAX_STACKED_EDGES = {WAYS['stacked']}")
        report = "\n".join([f"# {__doc__.splitlines()[0]}", "",
                            f"`{rerun_command('probe_stacked_heads.py')}`", "", setting, "",
                            *lines, ""])
        atomic_write_text(args.out / "probe_stacked_heads.md", report)


if __name__ == "__main__":
    main()
