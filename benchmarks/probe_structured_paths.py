"""Would structure-aware products (blocked windows, dense global rows) beat one CSR SpMM?

    python benchmarks/probe_structured_paths.py [--n 16384 65536] [--rounds 10]

The performance issue suggests computing the parts of a pattern by their structure. This probe
times one hop's products (all heads, ``Window(64) | Global(16) | Random(16)``) three ways,
alternated round by round in one process, and checks that all three agree:

- ``csr``: what graphdiff does, one torch CSR product per head on the shared structure;
- ``blocked window + CSR``: the edges with ``|i - j| <= w`` as dense blocks (queries
  ``[i b, i b + b)`` against keys ``[i b - w, i b + b + w)``, one batched GEMM per head over
  a zero-padded strided view of the operand), the other edges as a CSR product;
- ``dense full rows + CSR``: the rows that hold every column (the global tokens) as one dense
  ``[G, N] @ [N, C]`` GEMM per head, the other rows as a CSR product.

It is a probe, not a code path of the library: on the 2-core VM of the README neither
structured path was faster. A dense block computes ``b + 2w`` products per query where the
window has ``2w + 1`` edges, at close to the cores' peak, and that costs about what the whole
CSR product costs, which is bound by memory; the full rows are sequential reads already.
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Callable, Dict, List, Tuple

import torch
from torch import Tensor

from graphdiff.nn import as_graph
from graphdiff.nn.graph import DiffusionGraph
from graphdiff.patterns import Global, Random, Window

WINDOW = 64  # the window's half width w; also the query block size b


def sub_csr(graph: DiffusionGraph, values: Tensor, keep: Tensor) -> List[Tensor]:
    """Per-head CSR matrices of the edges where ``keep [E]`` holds (``values [H, E]``)."""
    n = graph.num_dst
    counts = torch.segment_reduce(keep.float(), "sum", offsets=graph.offsets()).to(torch.int32)
    crow = torch.zeros(n + 1, dtype=torch.int32)
    torch.cumsum(counts, 0, out=crow[1:])
    col, kept = graph.col[keep], values[:, keep].contiguous()
    return [torch.sparse_csr_tensor(crow, col, v, (n, graph.num_src)) for v in kept]


def products(n: int, heads: int, channels: int) -> Tuple[Dict[str, Callable[[], Tensor]], int]:
    """The three ways of one hop at length ``n``, each returning ``[H, N, C]``."""
    b = w = WINDOW
    if n % b:
        raise SystemExit(f"--n must be multiples of {b}, got {n}")
    graph = as_graph((Window(WINDOW) | Global(16) | Random(16, seed=0))(n), (n, n))
    values = torch.rand(heads, graph.num_edges)
    z = torch.randn(heads, n, channels)
    out = torch.empty(heads, n, channels)
    row, col = graph.row.long(), graph.col.long()
    full_csr = [graph.csr(v) for v in values]

    def csr() -> Tensor:
        for matrix, x, o in zip(full_csr, z, out):
            torch.mm(matrix, x, out=o)
        return out

    near = (row - col).abs() <= w
    blocks, width = n // b, b + 2 * w
    # Edge (i, j) sits in block i // b, row i % b, column j - (i // b * b - w).
    slot = row[near] * width + col[near] - (row[near] // b * b - w)
    band = values.new_zeros(heads, n * width)
    band[:, slot] = values[:, near]
    band = band.view(heads, blocks, b, width)
    far_csr = sub_csr(graph, values, ~near)
    padded = z.new_zeros(n + 2 * w, channels)

    def blocked_window() -> Tensor:
        for h in range(heads):
            padded[w:w + n].copy_(z[h])
            keys = padded.as_strided((blocks, width, channels), (b * channels, channels, 1))
            torch.bmm(band[h], keys, out=out[h].view(blocks, b, channels))
            torch.addmm(out[h], far_csr[h], z[h], out=out[h])
        return out

    degree = graph.offsets().diff()
    full_rows = (degree == n).nonzero().flatten()
    starts = graph.offsets()[full_rows]
    dense = torch.stack([values[:, s:s + n] for s in starts.tolist()], 1)  # [H, G, N]
    sparse_rows = sub_csr(graph, values, (degree != n).repeat_interleave(degree))

    def dense_rows() -> Tensor:
        for h in range(heads):
            torch.mm(sparse_rows[h], z[h], out=out[h])
            out[h].index_copy_(0, full_rows, dense[h] @ z[h])
        return out

    return ({"csr": csr, "blocked window + CSR": blocked_window,
             "dense full rows + CSR": dense_rows}, int(near.sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs=2, default=[16384, 65536])
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    warnings.filterwarnings("ignore", message="Sparse")
    runs: Dict[Tuple[int, str], Callable[[], Tensor]] = {}
    for n in args.n:
        ways, near = products(n, args.heads, args.channels)
        reference = ways["csr"]().clone()
        for name, way in ways.items():
            error = ((way() - reference).abs().max() / reference.abs().max()).item()
            print(f"n={n} {name}: max relative difference to csr {error:.1e}", flush=True)
            runs[n, name] = way
        print(f"n={n}: {near} of the edges in the band", flush=True)
    times: Dict[Tuple[int, str], List[float]] = {key: [] for key in runs}
    keys = list(runs)
    for round_ in range(args.rounds):  # rotate the order: nothing always runs after the same
        for i in range(len(keys)):
            key = keys[(i + round_) % len(keys)]
            start = time.perf_counter()
            runs[key]()
            times[key].append(time.perf_counter() - start)
    small, large = args.n
    print(f"| one hop, {args.heads} heads | n={small} ms | n={large} ms | growth (fastest) | "
          "growth (median) |")
    print("|---|---:|---:|---:|---:|")
    for name in ways:
        a, b = times[small, name], times[large, name]
        print(f"| {name} | {min(a) * 1e3:.1f} | {min(b) * 1e3:.1f} | {min(b) / min(a):.2f} | "
              f"{statistics.median(b) / statistics.median(a):.2f} |")


if __name__ == "__main__":
    main()
