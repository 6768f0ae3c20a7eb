"""Would structure-aware products (blocked windows, dense global rows) beat one CSR SpMM?

    python benchmarks/probe_structured_paths.py [--n 16384 65536] [--rounds 10] [--block 32]
        [--out DIR]

The performance issue suggests computing the parts of a pattern by their structure. This probe
times one hop's products (all heads, ``Window(64) | Global(16) | Random(16)``) three ways,
alternated round by round in one process, and checks that all three agree:

- ``csr``: what graphdiff does, one torch CSR product per head on the shared structure;
- ``blocked window + CSR``: the edges with ``|i - j| <= w`` as dense blocks (the queries of
  block ``B``, ``[B b, B b + b)``, against the keys ``[B b - w, B b + b + w)``: one batched
  GEMM per head over a zero-padded strided view of the operand), the other edges as a CSR
  product; ``window blocks alone`` times the batched GEMMs without the rest;
- ``dense full rows + CSR``: the rows that hold every column (the global tokens) as one dense
  ``[G, N] @ [N, C]`` GEMM per head, the other rows as a CSR product.

It prints (and with ``--out`` writes to ``DIR/probe_structured_paths.md``) the fastest time of
each at both lengths and its growth. It is a probe, not a code path of the library: on the
2-core VM of the README the blocked window was within +-6% of the CSR product (a dense block
computes ``b + 2w`` products per query where the window has ``2w + 1`` edges, and the CSR
product of the rest costs as much as the whole), though it grew less from 16k to 64k; the
dense full rows were slower (their reads are sequential in the CSR product already).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch
from torch import Tensor

from bench_common import alternate, growth_row, positive_int, probe_parser, rerun_command
from graphdiff.io import atomic_write_text
from graphdiff.nn import diffusion_graph
from graphdiff.nn.graph import DiffusionGraph
from graphdiff.patterns import Global, Random, Window

WINDOW = 64  # Window(64): each query sees the keys within w = 32 positions on either side

Product = Callable[[], Tensor]


def sub_csr(graph: DiffusionGraph, values: Tensor, keep: Tensor) -> List[Tensor]:
    """Per-head CSR matrices of the edges where ``keep [E]`` holds (``values [H, E]``)."""
    n = graph.num_dst
    counts = torch.segment_reduce(keep.float(), "sum", offsets=graph.offsets())
    crow = torch.zeros(n + 1, dtype=graph.index_dtype)
    torch.cumsum(counts.to(graph.index_dtype), 0, out=crow[1:])
    col, kept = graph.col[keep], values[:, keep].contiguous()
    return [torch.sparse_csr_tensor(crow, col, v, (n, graph.num_src)) for v in kept]


def products(n: int, heads: int, channels: int, block: int = WINDOW // 2
             ) -> Tuple[Dict[str, Product], Dict[str, Product], int]:
    """At length ``n``: the three ways of one hop (each writes and returns ``[H, N, C]`` into
    one shared buffer), the timing-only parts, and the number of edges in the band."""
    b, w = block, WINDOW // 2
    if n % b:
        raise SystemExit(f"--n must be multiples of the block size {b}, got {n}")
    graph = diffusion_graph((Window(WINDOW) | Global(16) | Random(16, seed=0))(n), (n, n))
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

    def window_blocks(h: int) -> None:
        padded[w:w + n].copy_(z[h])
        keys = padded.as_strided((blocks, width, channels), (b * channels, channels, 1))
        torch.bmm(band[h], keys, out=out[h].view(blocks, b, channels))

    def blocked_window() -> Tensor:
        for h in range(heads):
            window_blocks(h)
            torch.addmm(out[h], far_csr[h], z[h], out=out[h])
        return out

    def window_blocks_alone() -> Tensor:
        for h in range(heads):
            window_blocks(h)
        return out

    degree = graph.offsets().diff()
    full_rows = (degree == n).nonzero().flatten()
    if full_rows.numel() == 0:
        raise SystemExit(f"the pattern has no full rows at n={n}")
    starts = graph.offsets()[full_rows]
    dense = torch.stack([values[:, s:s + n] for s in starts.tolist()], 1)  # [H, G, N]
    sparse_rows = sub_csr(graph, values, (degree != n).repeat_interleave(degree))

    def dense_rows() -> Tensor:
        for h in range(heads):
            torch.mm(sparse_rows[h], z[h], out=out[h])
            out[h].index_copy_(0, full_rows, dense[h] @ z[h])
        return out

    ways = {"csr": csr, "blocked window + CSR": blocked_window,
            "dense full rows + CSR": dense_rows}
    return ways, {"window blocks alone": window_blocks_alone}, int(near.sum())


def main() -> None:
    parser = probe_parser(__doc__)
    parser.add_argument("--block", type=positive_int, default=WINDOW // 2,
                        help="queries per dense block (default: the half width, 32)")
    parser.add_argument("--out", type=Path, default=None, help="write the table to this folder")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Sparse")
    runs: Dict[Tuple[int, str], Product] = {}
    notes = []
    for n in args.n:
        ways, parts, near = products(n, args.heads, args.channels, args.block)
        reference = ways["csr"]().clone()
        for name, way in ways.items():
            way().fill_(float("nan"))  # a way that skips rows or heads must not pass
            error = ((way() - reference).abs().max() / reference.abs().max()).item()
            notes.append(f"n={n} {name}: max relative difference to csr {error:.1e}")
            print(notes[-1], flush=True)
        notes.append(f"n={n}: {near} of the edges in the band |i - j| <= {WINDOW // 2}")
        runs.update({(n, name): run for name, run in {**ways, **parts}.items()})
    times = alternate(runs, args.rounds)
    small, large = args.n
    lines = [f"| one hop, {args.heads} heads | n={small} ms (fastest of {args.rounds}) | "
             f"n={large} ms | growth (fastest) | growth (median) |", "|---|---:|---:|---:|---:|"]
    lines += [growth_row(name, times[small, name], times[large, name])
              for name in dict.fromkeys(name for _, name in runs)]
    print("\n".join(lines))
    if args.out:
        command = rerun_command("probe_structured_paths.py")
        report = "\n".join([f"# {__doc__.splitlines()[0]}", "", f"`{command}`", "",
                            *(f"- {note}" for note in notes), "", *lines, ""])
        atomic_write_text(args.out / "probe_structured_paths.md", report)


if __name__ == "__main__":
    main()
