"""Which operations of the fused core grow faster than the sequence length?

    python benchmarks/profile_scaling.py [--n 16384 65536]

Profiles one forward + backward of ``edge_softmax_attention`` + ``diffuse`` (8 heads x 32
channels, K = 5, ``Window(64) | Global(16) | Random(16)``) at two lengths and prints each
operator's self time at both, with the ratio: linear scaling gives ratio = n2 / n1.
"""
from __future__ import annotations

import argparse
import warnings

import torch
from torch.profiler import profile

from graphdiff.nn.functional import diffuse, edge_softmax_attention
from graphdiff.patterns import Global, Random, Window


def operator_times(n: int, heads: int = 8, channels: int = 32) -> dict:
    """Self CPU time (microseconds) of every operator in one forward + backward at length n."""
    edge_index = (Window(64) | Global(16) | Random(16, seed=0))(n)
    q, k, v = (torch.randn(n, heads, channels, requires_grad=True) for _ in range(3))

    def step() -> None:
        attention = edge_softmax_attention(q, k, edge_index, n)
        diffuse(attention, v, edge_index, 5, 0.1).sum().backward()

    step()  # warm-up: builds the cached structure
    with profile() as prof:
        step()
    return {event.key: event.self_cpu_time_total for event in prof.key_averages()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", nargs=2, type=int, default=[16384, 65536])
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Sparse")
    small, large = (operator_times(n) for n in args.n)
    print(f"total self time ratio {sum(large.values()) / sum(small.values()):.2f} (linear: {args.n[1] / args.n[0]:.2f})")
    print(f"| operator | n={args.n[0]} ms | n={args.n[1]} ms | ratio |")
    print("|---|---:|---:|---:|")
    for key in sorted(large, key=large.get, reverse=True)[: args.top]:
        before = small.get(key, 0.0)
        print(f"| {key} | {before / 1e3:.1f} | {large[key] / 1e3:.1f} | {large[key] / max(before, 1.0):.2f} |")


if __name__ == "__main__":
    main()
