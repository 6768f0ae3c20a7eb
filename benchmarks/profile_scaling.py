"""Which operations of the fused core grow faster than the sequence length?

    python benchmarks/profile_scaling.py [--n 16384 65536] [--layer] [--parts]

Profiles one forward + backward of ``edge_softmax_attention`` + ``diffuse`` (8 heads x 32
channels, K = 5, ``Window(64) | Global(16) | Random(16)``) at two lengths and prints each
operator's self time at both (its least over rounds that alternate the lengths), with the
ratio: linear scaling gives ratio = n2 / n1. ``--layer`` profiles a whole ``DiffuserLayer``
instead (hidden 256, feed-forward 1024, no dropout): run it with and without
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1099511627776`` in the environment to see what
faulting in fresh pages for every tensor over 32 MB costs.

``--parts`` times instead one head's SpMM (the kernel of every hop: CSR ``@`` a ``[N, 32]``
operand) on each part of the pattern alone and on the whole, alternating the two lengths
round by round, and prints nanoseconds per edge: a part that scales linearly costs the same
per edge at both lengths.
"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch.profiler import profile

from bench_common import alternate, diffuser_layer, positive_int, rerun_command
from graphdiff.io import atomic_write_text
from graphdiff.nn import diffusion_graph
from graphdiff.nn.functional import diffuse, edge_softmax_attention
from graphdiff.patterns import Global, Random, Window

PARTS = {"window": Window(64), "global": Global(16), "random": Random(16, seed=0),
         "all": Window(64) | Global(16) | Random(16, seed=0)}


def operator_times(ns: List[int], rounds: int, layer: bool = False, heads: int = 8,
                   channels: int = 32) -> Dict[int, Dict[str, float]]:
    """``{n: {operator: self CPU microseconds}}`` of one forward + backward (of the core, or
    of a whole ``DiffuserLayer`` with ``layer``) at every length, each operator's least over
    rounds that alternate the lengths (so drift hits all alike, and a disturbed round does not
    count)."""
    def make_step(n: int) -> Callable[[], None]:
        edge_index = PARTS["all"](n)
        if layer:
            module = diffuser_layer(heads * channels, heads)
            x = torch.randn(n, heads * channels, requires_grad=True)

            def step() -> None:
                out = module(x, edge_index)
                out.backward(torch.ones_like(out))
                x.grad = None
                module.zero_grad(set_to_none=True)
        else:
            q, k, v = (torch.randn(n, heads, channels, requires_grad=True) for _ in range(3))

            def step() -> None:
                attention = edge_softmax_attention(q, k, edge_index, n)
                diffuse(attention, v, edge_index, 5, 0.1).sum().backward()
                q.grad = k.grad = v.grad = None

        step()  # warm-up: builds the cached structure
        return step

    steps = {n: make_step(n) for n in ns}
    least: Dict[int, Dict[str, float]] = {n: {} for n in ns}
    for _ in range(rounds):
        for n, step in steps.items():
            with profile() as prof:
                step()
            for event in prof.key_averages():
                least[n][event.key] = min(least[n].get(event.key, float("inf")),
                                          event.self_cpu_time_total)
    return least


def spmm_ns_per_edge(ns: List[int], rounds: int,
                     channels: int = 32) -> Dict[Tuple[str, int], Tuple[float, int]]:
    """``{(part, n): (fastest ns per edge, edges)}`` of one head's SpMM over rounds that
    alternate every part and length (so drift hits all alike)."""
    products, edges = {}, {}
    for name, pattern in PARTS.items():
        for n in ns:
            graph = diffusion_graph(pattern(n), (n, n))
            matrix = graph.csr(torch.rand(graph.num_edges))
            x, out = torch.randn(n, channels), torch.empty(n, channels)
            products[name, n] = lambda m=matrix, x=x, out=out: torch.mm(m, x, out=out)
            edges[name, n] = graph.num_edges
    alternate(products, 1)  # warm-up
    times = alternate(products, rounds)
    return {key: (min(times[key]) / edges[key] * 1e9, edges[key]) for key in products}


def report(args: argparse.Namespace) -> List[str]:
    """The markdown lines of the profile that ``args`` asks for."""
    small, large = args.n
    if args.parts:
        per_edge = spmm_ns_per_edge(args.n, 20 if args.rounds is None else args.rounds)
        lines = [f"| part | ns/edge n={small} | ns/edge n={large} | time growth |",
                 "|---|---:|---:|---:|"]
        for name in PARTS:
            (a, edges_a), (b, edges_b) = per_edge[name, small], per_edge[name, large]
            lines.append(f"| {name} | {a:.2f} | {b:.2f} | {b * edges_b / (a * edges_a):.2f} |")
        return lines
    times = operator_times(args.n, 3 if args.rounds is None else args.rounds, args.layer)
    before, after = times[small], times[large]
    # A sum of per-operator minima (each from its least disturbed round): a lower bound of a
    # step, not the time of any one step.
    total_before, total_after = sum(before.values()) / 1e3, sum(after.values()) / 1e3
    lines = [f"total of the operators' least self times: {total_before:.0f} ms at n={small}, "
             f"{total_after:.0f} ms at n={large}, ratio {total_after / total_before:.2f} "
             f"(linear: {large / small:.2f})",
             "", f"| operator | n={small} ms | n={large} ms | ratio |", "|---|---:|---:|---:|"]
    for key in sorted(after, key=after.get, reverse=True)[: args.top]:
        lines.append(f"| {key} | {before.get(key, 0.0) / 1e3:.1f} | {after[key] / 1e3:.1f} | "
                     f"{after[key] / max(before.get(key, 0.0), 1.0):.2f} |")
    return lines


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", nargs=2, type=positive_int, default=[16384, 65536])
    parser.add_argument("--top", type=positive_int, default=12)
    parser.add_argument("--layer", action="store_true",
                        help="profile a whole DiffuserLayer instead of the core")
    parser.add_argument("--parts", action="store_true",
                        help="one head's SpMM per pattern part, ns per edge")
    parser.add_argument("--rounds", type=positive_int, default=None,
                        help="rounds that alternate the lengths (default: 3; 20 for --parts)")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the table, with the command and the allocator "
                        "settings, to this markdown file")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="Sparse")
    lines = report(args)
    print("\n".join(lines))
    if args.out:
        command = rerun_command("profile_scaling.py", argv)
        allocator = {k: v for k, v in os.environ.items()
                     if k.startswith("MALLOC_") or k == "LD_PRELOAD"}
        header = [f"`{command}`", "",
                  f"torch {torch.__version__}, {torch.get_num_threads()} threads; allocator "
                  f"environment: {allocator or 'none (glibc defaults)'}; "
                  f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC", ""]
        atomic_write_text(args.out, "\n".join(header + lines) + "\n")


if __name__ == "__main__":
    main()
