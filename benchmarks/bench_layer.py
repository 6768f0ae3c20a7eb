"""Speed and memory of one attention diffusion layer against its baselines.

Every (variant, n) runs in fresh subprocesses: one for time (median of ``--repeats`` runs
after a warm-up) and one for memory (peak RSS of one fwd+bwd after a warm-up, minus the RSS
before it: inputs and the cached CSR structure, built once per pattern and length, are not
counted; the structure's size is in the JSON, ``structure_mb``). fwd and bwd are medians of
their own; fwd+bwd is their sum. Ratios compare variants of the same run.

The growth with n of graphdiff's core and of a whole Diffuser layer is also measured side by
side: one process per variant builds every length and alternates one step of each for
``--growth-rounds`` rounds, so that a drift of the machine (about +-25% over minutes on a
shared 2-core VM) hits all lengths alike instead of whichever length ran during it. The
core's process also alternates one bare CSR SpMM per head at the same lengths: the growth of
torch's own sparse product on the same structure in the same rounds, the part of the core's
growth that belongs to the machine (its caches) rather than to graphdiff. One hop
against the bare SpMMs is measured the same way, one process per n alternating them for
``--pair-rounds`` rounds: they take milliseconds, so separate processes minutes apart mostly
compare the machine's drift.

Variants (all fp32, H heads x C channels, K hops):

- ``graphdiff``   the core: edge attention + K-hop PPR diffusion (default path), the
  attention in the storage order of the heads' stack, as the layer runs it
- ``graphdiff_csr`` the same core with every edge in the CSR: without the dense parts (the
  band and global tokens) that ``diffusion_graph`` finds in the pattern
- ``module``      ``AttentionDiffusion`` layer (adds the Q/K/V projections from ``H*C``)
- ``gather``      the same layer with ``fused=False``: one PyG gather-scatter per hop
- ``layer``       a whole ``DiffuserLayer`` (the module, output projection, two LayerNorms
  and a feed-forward block of width ``4 H C``, no dropout)
- ``sdpa``        dense ``scaled_dot_product_attention`` over all n tokens
- ``sdpa_layer``  the same transformer layer with dense attention:
  ``torch.nn.TransformerEncoderLayer`` (post-LN, GELU, width ``4 H C``, no dropout), whose
  attention runs ``scaled_dot_product_attention``
- ``spmm``        one bare ``torch.sparse`` CSR SpMM on the same structure, all heads in one
  block-diagonal matrix (forward only)
- ``spmm_heads``  bare ``torch.sparse`` CSR SpMMs, one per head, on the shared structure
  (forward only; at long lengths faster than the block-diagonal one)
- ``hop``         graphdiff's diffusion with ``hops=1`` (forward only; compared with the
  faster of the two bare SpMMs)
- ``lf_graphdiff`` the layer (projections included), ``hops=1, alpha=0``, on
  ``longformer(window)`` with 16 global tokens
- ``longformer``  HF ``LongformerSelfAttention`` (projections included; window, 16 global
  tokens), when
  ``transformers`` is installed (``pip install graphdiff[bench]``)

Usage::

    python benchmarks/bench_layer.py                 # n = 1k, 4k, 16k, 64k
    python benchmarks/bench_layer.py --quick         # n = 256, 1k: a smoke test
    python benchmarks/bench_layer.py --n 16384 --variants graphdiff sdpa --plot --out /tmp/bench
    python benchmarks/bench_layer.py --reuse-freed-memory --out /tmp/reuse

``--reuse-freed-memory`` runs the timing processes with glibc keeping freed memory in its
heap (``REUSE_FREED_MEMORY``: no ``mmap`` per large tensor, no trimming): by default every
tensor over 32 MB gets fresh pages from the kernel, which fault in one by one at first touch,
at every step. It measures what that costs; for training, docs/performance.md recommends jemalloc
with purging off instead (glibc's heap can grow, since torch's aligned requests do not fit
freed blocks of the same size).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from bench_common import (
    alternate,
    diffuser_layer,
    paired_ratios,
    rerun_command,
    rss_mb,
    sdpa_transformer_layer,
)

from graphdiff.cli_types import positive_float, positive_int
from graphdiff.io import atomic_write

ALL_VARIANTS = [
    "graphdiff",
    "graphdiff_csr",
    "module",
    "gather",
    "layer",
    "sdpa",
    "sdpa_layer",
    "spmm",
    "spmm_heads",
    "hop",
    "lf_graphdiff",
    "longformer",
]
DENSE = ("sdpa", "sdpa_layer")  # quadratic: skipped above --max-sdpa-n
REUSE_FREED_MEMORY = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}
DENSE_BASELINE = {"layer": "sdpa_layer", "sdpa_layer": "sdpa_layer"}  # the rest: "sdpa"
BARE_SPMMS = ("spmm", "spmm_heads")  # a hop is checked against the faster of the two
SCALING_VARIANTS = ("graphdiff", "module", "layer")  # each one's growth with n is checked
INTERLEAVED_GROWTH = ("graphdiff", "layer")  # ... and measured interleaved too
# The core's interleaved growth runs alongside this bare product (one torch CSR SpMM per head,
# forward only: the product every hop of the core runs on long sequences, where each head
# makes its own call) at the same lengths: the growth of the machine's own sparse kernel on the
# structure, in the same rounds, to read the core's growth against.
GROWTH_BASELINE = {"graphdiff": "spmm_heads"}
# The core's growth may exceed the bare product's by this factor: what the product does not
# pay is the core's own (its softmax, copies and scratch).
RELATIVE_GROWTH_TARGET = 1.25
TARGET_N = 16384  # the length of the memory and layer targets (docs/performance.md)


# ----------------------------------------------------------------------------- worker side


def _setup(
    variant: str,
    n: int,
    heads: int,
    channels: int,
    hops: int,
    window: int,
    num_global: int,
    num_random: int,
):
    """Build inputs for one variant; returns (forward, whether it has a backward, info)."""
    import torch

    from graphdiff.nn import AttentionDiffusion, DiffusionGraph, diffusion_graph
    from graphdiff.nn._core import stack_edges, stacks
    from graphdiff.nn.functional import diffuse_stacked, softmax_attention_stacked
    from graphdiff.patterns import Global, Random, Window, longformer

    torch.manual_seed(0)
    H, C = heads, channels
    info: Dict[str, float] = {}
    if variant in ("lf_graphdiff", "longformer"):
        pattern = longformer(window=window, global_indices=range(num_global))
    else:
        pattern = Window(window) | Global(num_global) | Random(num_random, seed=0)

    if variant == "sdpa":
        q, k, v = (torch.randn(1, H, n, C, requires_grad=True) for _ in range(3))
        return (lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)), True, info
    if variant == "sdpa_layer":
        dense_layer = sdpa_transformer_layer(H * C, H)
        x = torch.randn(1, n, H * C, requires_grad=True)
        return (lambda: dense_layer(x)), True, info

    if variant == "longformer":
        from transformers import LongformerConfig
        from transformers.models.longformer.modeling_longformer import LongformerSelfAttention

        cfg = LongformerConfig(
            hidden_size=H * C,
            num_attention_heads=H,
            attention_window=[window],
            attention_probs_dropout_prob=0.0,
        )
        layer = LongformerSelfAttention(cfg, layer_id=0)
        x = torch.randn(1, n, H * C, requires_grad=True)
        mask = torch.zeros(1, n)
        mask[:, :num_global] = 1.0  # >0: global attention (HF's extended-mask convention)
        is_global = mask > 0
        is_index_masked = mask < 0

        def forward():
            return layer(
                x,
                attention_mask=mask,
                is_index_masked=is_index_masked,
                is_index_global_attn=is_global,
                is_global_attn=bool(is_global.any()),
            )[0]

        return forward, True, info

    edge_index = pattern(n)
    info["edges"] = edge_index.size(1)
    before = rss_mb()
    if variant == "graphdiff_csr":
        graph = DiffusionGraph(edge_index[0], edge_index[1], (n, n), find_dense=False)
    else:
        graph = diffusion_graph(edge_index, (n, n))
    graph.transposed()  # the structure is built once per pattern, before timing
    if variant not in (*BARE_SPMMS, "gather"):  # graphdiff's kernels: with the heads' stack
        stacks(graph, H)[0].transposed()  # (short sequences), else the warm-up would build it
    info["structure_mb"] = rss_mb() - before

    if variant == "layer":
        layer = diffuser_layer(H * C, H, hops)
        x = torch.randn(n, H * C, requires_grad=True)
        return (lambda: layer(x, graph)), True, info
    if variant in ("module", "gather", "lf_graphdiff"):
        one_hop = variant == "lf_graphdiff"  # like Longformer: projections + one hop
        conv = AttentionDiffusion(
            H * C,
            C,
            heads=H,
            hops=1 if one_hop else hops,
            alpha=0.0 if one_hop else 0.1,
            fused=variant != "gather",
        )
        x = torch.randn(n, H * C, requires_grad=True)
        return (lambda: conv(x, graph)), True, info

    bare = variant in ("spmm", "spmm_heads")
    q, k, v = (torch.randn(H, n, C, requires_grad=not bare) for _ in range(3))
    if bare:  # the plain CSR of every edge, without the dense parts graphdiff finds
        graph = DiffusionGraph(edge_index[0], edge_index[1], (n, n), find_dense=False)
    if variant == "spmm":  # what one would write by hand: all heads in one block-diagonal CSR
        crow, col, E = graph.crow, graph.col, graph.num_edges
        shift = torch.arange(H).unsqueeze(1)
        itype = torch.int32 if H * E < 2**31 else torch.int64  # as torch would convert to
        block_crow = torch.cat([(crow[:-1] + shift * E).reshape(-1), shift.new_full((1,), H * E)])
        block_col = (col + shift * n).reshape(-1)
        csr = torch.sparse_csr_tensor(
            block_crow.to(itype), block_col.to(itype), torch.rand(H * E), (H * n, H * n)
        )
        x = v.reshape(-1, C)
        return (lambda: csr @ x), False, info
    if variant == "spmm_heads":
        matrices = [graph.csr(values) for values in torch.rand(H, graph.num_edges)]
        return (lambda: [matrix @ x for matrix, x in zip(matrices, v)]), False, info
    # The functions take [N, H, C]: head-major [H, N, C] storage passes as its transpose.
    if variant == "hop":
        attn = stack_edges(torch.rand(H, graph.num_edges), graph)
        vv = v.detach().transpose(0, 1)
        hop = (attn, vv, graph, 1, 0.1, "ppr", 1.0, 0.0, False)
        return (lambda: diffuse_stacked(*hop)), False, info
    q_, k_, v_ = (x.transpose(0, 1) for x in (q, k, v))
    # The attention in the storage order of the heads' stack, as the layer runs it: never
    # reordered into the [E, H] of the public functions.
    return (
        lambda: diffuse_stacked(
            softmax_attention_stacked(q_, k_, graph, C**-0.5),
            v_,
            graph,
            hops,
            0.1,
            "ppr",
            1.0,
            0.0,
            False,
        ),
        True,
        info,
    )


def reset_peak_rss() -> None:
    """Restart the kernel's high-water mark of this process's RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_since_reset_mb() -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def _run(forward: Callable, with_backward: bool) -> Tuple[float, float]:
    import torch

    start = time.perf_counter()
    with torch.set_grad_enabled(with_backward):
        out = forward()
    mid = time.perf_counter()
    if with_backward:
        out.backward(torch.ones_like(out))
    return mid - start, time.perf_counter() - mid


def interleaved_worker(spec: dict) -> dict:
    """One step (fwd, plus bwd where the variant has one) of every ``(variant, n)`` of
    ``spec["workloads"]`` per round, alternating them (:func:`bench_common.alternate`, whose
    order rotates) for ``spec["rounds"]`` rounds after one warm-up each:
    ``{"times": [[seconds per round] per workload]}``."""
    steps = {}
    for i, (variant, n) in enumerate(spec["workloads"]):
        forward, with_backward, _ = _setup(**dict(spec["shape"], variant=variant, n=n))
        steps[i] = lambda forward=forward, with_backward=with_backward: _run(forward, with_backward)
    alternate(steps, 1)  # warm-up
    times = alternate(steps, spec["rounds"])
    return {"times": [times[i] for i in steps]}


def worker(spec: dict) -> dict:
    """``mode="time"``: median times after a warm-up. ``mode="memory"``: peak RSS of one
    fwd(+bwd) after a warm-up, over the RSS before it (run with glibc's mmap threshold fixed,
    so that freed tensors leave the RSS and the high-water mark is exact).
    ``mode="interleaved"``: :func:`interleaved_worker`."""
    if spec["mode"] == "interleaved":
        return interleaved_worker(spec)
    forward, with_backward, info = _setup(
        **{
            k: spec[k]
            for k in (
                "variant",
                "n",
                "heads",
                "channels",
                "hops",
                "window",
                "num_global",
                "num_random",
            )
        }
    )
    _run(forward, with_backward)  # warm-up
    if spec["mode"] == "memory":
        base = rss_mb()
        reset_peak_rss()
        _run(forward, with_backward)
        return dict(info, peak_mb=peak_rss_since_reset_mb() - base)
    times = [_run(forward, with_backward) for _ in range(spec["repeats"])]
    return dict(
        info,
        fwd=statistics.median(t[0] for t in times),
        bwd=statistics.median(t[1] for t in times) if with_backward else None,
        fastest=min(sum(t) for t in times),
    )


# ----------------------------------------------------------------------------- driver side


def gather_gb(n: int, heads: int, channels: int, edges_per_token: float = 113.0) -> float:
    """Rough peak of the gather-scatter path: about ten live [E, H, C] fp32 tensors."""
    return 10 * n * edges_per_token * heads * channels * 4 / 2**30


def worker_env(mode: str) -> Dict[str, str]:
    """The environment of a worker: this process's, except that a memory worker has glibc
    return every freed block over 128 KB to the kernel, so that freed tensors leave the RSS
    and its peak is exact."""
    env = dict(os.environ)
    if mode == "memory":
        env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 17)
        for key in REUSE_FREED_MEMORY:
            env.pop(key, None)
    return env


def run_one(spec: dict, timeout: float) -> dict:
    """Time, then measure memory, each in a fresh subprocess."""
    result: dict = {}
    for mode in ("time", "memory"):
        env = worker_env(mode)
        cmd = [sys.executable, __file__, "--worker", json.dumps(dict(spec, mode=mode))]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {"error": f"{mode}: timeout after {timeout:.0f} s"}
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
            return {"error": f"{mode}: exit {proc.returncode}: {tail[:120]}"}
        result.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    return result


Workload = Tuple[str, int]  # (variant, n)


def run_interleaved(
    shape: dict, workloads: List[Workload], rounds: int, timeout: float
) -> Dict[Workload, List[float]]:
    """Per-round seconds of every workload, interleaved in one fresh process."""
    spec = dict(mode="interleaved", shape=shape, workloads=workloads, rounds=rounds)
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout * len(workloads),
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"exit {proc.returncode}: {tail[:200]}")
    times = json.loads(proc.stdout.strip().splitlines()[-1])["times"]
    return dict(zip(workloads, times))


def growth_line(variant: str, a: int, b: int, how: str, median: float, fastest: float) -> str:
    """One check of a variant's growth from n = a to n = b (target: at most 1.125 b / a)."""
    return (
        f"{variant} time({b}) / time({a}){how} = {median:.2f} median, {fastest:.2f} "
        f"fastest (linear: {b / a:.1f}; target <= {1.125 * b / a:.1f})"
    )


def baseline_line(
    variant: str, baseline: str, a: int, b: int, growth: Dict[str, Dict[int, List[float]]]
) -> str:
    """The growth of ``baseline`` from n = a to n = b in the rounds of ``variant``'s, and the
    median over rounds of the variant's growth divided by the baseline's (1: the variant grows
    exactly as much as the machine's bare sparse product on the same structure; target: at
    most :data:`RELATIVE_GROWTH_TARGET`)."""
    median, fastest = paired_ratios(growth[baseline][b], growth[baseline][a])
    relative = statistics.median(
        (vb / va) / (sb / sa)
        for va, vb, sa, sb in zip(
            growth[variant][a], growth[variant][b], growth[baseline][a], growth[baseline][b]
        )
    )
    return (
        f"{baseline} (bare CSR SpMM, one per head) time({b}) / time({a}), same rounds = "
        f"{median:.2f} median, {fastest:.2f} fastest; {variant} growth / {baseline} "
        f"growth = {relative:.2f} median (target <= {RELATIVE_GROWTH_TARGET})"
    )


def growth_lines(
    shape: dict, lengths: Dict[str, List[int]], rounds: int, timeout: float
) -> Tuple[List[str], Dict[str, Dict[int, List[float]]]]:
    """Each variant's growth between its consecutive ``lengths``, interleaved in one process
    per variant (:func:`paired_ratios`; one variant's failure loses only its own lines), with
    its :data:`GROWTH_BASELINE` in the same rounds where it has one: the checks and every
    (variant, length)'s per-round seconds."""
    checks, growth = [], {}
    for variant, ns in lengths.items():
        baseline = GROWTH_BASELINE.get(variant)
        names = [variant] if baseline is None else [variant, baseline]
        print(f"interleaving {' and '.join(names)} at n = {ns} for {rounds} rounds ...", flush=True)
        try:
            times = run_interleaved(
                shape, [(name, n) for name in names for n in ns], rounds, timeout
            )
        except (RuntimeError, subprocess.TimeoutExpired) as error:  # keep the other results
            checks.append(f"{variant}: interleaved growth measurement failed: {error}")
            continue
        for (name, n), t in times.items():
            growth.setdefault(name, {})[n] = t
        for a, b in zip(ns, ns[1:]):
            checks.append(
                growth_line(
                    variant,
                    a,
                    b,
                    f", interleaved over {rounds} rounds",
                    *paired_ratios(growth[variant][b], growth[variant][a]),
                )
            )
            if baseline is not None:
                checks.append(baseline_line(variant, baseline, a, b, growth))
    return checks, growth


def hop_line(n: int, bare: str, how: str, median: float, fastest: float) -> str:
    """One check of a diffusion hop against the faster bare SpMM, ``bare`` (target: at most
    1.5x)."""
    return (
        f"n={n}: one hop / bare CSR SpMM ({bare}, the faster){how} = {median:.2f} median, "
        f"{fastest:.2f} fastest (target <= 1.5)"
    )


def hop_lines(
    shape: dict, results: Dict[int, Dict[str, dict]], rounds: int, timeout: float
) -> Tuple[List[str], Dict[int, Dict[str, List[float]]]]:
    """One hop against the bare SpMMs, interleaved in one process per n (where the hop and
    at least one bare SpMM ran): the checks against the bare SpMM with the smaller median,
    and every workload's per-round seconds."""
    checks, raw = [], {}
    for n, row in results.items():
        bare = [v for v in BARE_SPMMS if "fwd" in row.get(v, {})]
        if "fwd" not in row.get("hop", {}) or not bare:
            continue
        print(
            f"interleaving hop and {', '.join(bare)} at n = {n} for {rounds} rounds ...", flush=True
        )
        try:
            times = run_interleaved(shape, [(v, n) for v in ["hop", *bare]], rounds, timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            checks.append(f"n={n}: interleaved hop measurement failed: {error}")
            continue
        raw[n] = {variant: t for (variant, _), t in times.items()}
        faster = min(bare, key=lambda v: statistics.median(raw[n][v]))
        checks.append(
            hop_line(
                n,
                faster,
                f", interleaved over {rounds} rounds",
                *paired_ratios(raw[n]["hop"], raw[n][faster]),
            )
        )
    return checks, raw


def git_revision() -> str:
    """The checked-out commit (with "+changes" when tracked code differs from it; earlier
    results in benchmarks/results do not count), or "unknown"."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent
        ).stdout.strip()

    try:
        revision = git("rev-parse", "--short", "HEAD")
        changed = git(
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ":(top)",
            ":(top,exclude)benchmarks/results",
        )
    except OSError:
        return "unknown"
    return (revision + ("+changes" if changed else "")) or "unknown"


def fmt(x: Optional[float], unit: str = "s") -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if unit == "s" else f"{x:.0f}"


def table(results: Dict[int, Dict[str, dict]], variants: List[str]) -> str:
    """The markdown table of a run; "vs dense" is against ``sdpa``, for the layers against
    ``sdpa_layer``."""
    lines = [
        "| n | variant | fwd s | bwd s | fwd+bwd s | peak extra MB | vs graphdiff | vs dense |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, row in results.items():
        total_ref = _total(row.get("graphdiff", {}))
        for variant in variants:
            total_dense = _total(row.get(DENSE_BASELINE.get(variant, "sdpa"), {}))
            r = row.get(variant)
            if r is None:
                continue
            if "error" in r or "skipped" in r:
                lines.append(f"| {n} | {variant} | {r.get('error') or r['skipped']} | | | | | |")
                continue
            total = _total(r)
            ratio = f"{total / total_ref:.2f}x" if total and total_ref else "-"
            ratio_dense = f"{total / total_dense:.2f}x" if total and total_dense else "-"
            lines.append(
                f"| {n} | {variant} | {fmt(r['fwd'])} | {fmt(r['bwd'])} | "
                f"{fmt(total)} | {fmt(r['peak_mb'], 'mb')} | {ratio} | {ratio_dense} |"
            )
    return "\n".join(lines)


def _total(r: dict) -> Optional[float]:
    if not r or "fwd" not in r:
        return None
    return r["fwd"] + (r["bwd"] or 0.0)


def lengths_run(results: Dict[int, Dict[str, dict]], variant: str) -> List[int]:
    """The lengths at which ``variant`` ran, ascending."""
    return sorted(n for n in results if _total(results[n].get(variant, {})))


def targets(results: Dict[int, Dict[str, dict]]) -> List[str]:
    """The targets of docs/performance.md that this run can evaluate."""
    out = []
    for n, row in results.items():
        g, s = _total(row.get("graphdiff", {})), _total(row.get("sdpa", {}))
        if g and s:
            out.append(f"n={n}: graphdiff fwd+bwd / SDPA = {g / s:.2f} (target <= 0.5)")
        if g:  # the targets that hold at one length are printed at that length only
            out.append(
                f"n={n}: graphdiff peak extra memory = "
                f"{row['graphdiff']['peak_mb']:.0f} MB"
                + (" (target <= 550)" if n == TARGET_N else "")
            )
        m = _total(row.get("module", {}))
        if g and m:
            out.append(f"n={n}: module / functional core = {m / g:.2f}")
        layer, dense_layer = _total(row.get("layer", {})), _total(row.get("sdpa_layer", {}))
        if layer and dense_layer:
            out.append(
                f"n={n}: Diffuser layer / SDPA transformer layer, fwd+bwd = "
                f"{layer / dense_layer:.2f}" + (" (target <= 0.5)" if n == TARGET_N else "")
            )
        if layer and m:
            out.append(f"n={n}: Diffuser layer / module = {layer / m:.2f}")
        hop = row.get("hop", {})
        bare = [v for v in BARE_SPMMS if "fwd" in row.get(v, {})]
        if "fwd" in hop and bare:
            faster = min(bare, key=lambda v: row[v]["fwd"])
            out.append(
                hop_line(
                    n,
                    faster,
                    ", separate processes",
                    hop["fwd"] / row[faster]["fwd"],
                    hop["fastest"] / row[faster]["fastest"],
                )
            )
        lf, lfg = _total(row.get("longformer", {})), _total(row.get("lf_graphdiff", {}))
        if lf and lfg:
            out.append(
                f"n={n}: graphdiff (hops=1, Longformer pattern) / HF Longformer = "
                f"{lfg / lf:.2f} (target <= 2)"
            )
    for variant in SCALING_VARIANTS:
        ns = lengths_run(results, variant)
        for a, b in zip(ns, ns[1:]):
            ra, rb = results[a][variant], results[b][variant]
            # The fastest run is the least disturbed by other tenants of a shared machine.
            out.append(
                growth_line(
                    variant,
                    a,
                    b,
                    ", separate processes",
                    _total(rb) / _total(ra),
                    rb["fastest"] / ra["fastest"],
                )
            )
    return out


# What each plotted variant is, for the figure's legend.
PLOT_LABELS = {
    "graphdiff": "graphdiff core (functional API)",
    "graphdiff_csr": "graphdiff core, every edge in the CSR",
    "module": "AttentionDiffusion module (+ Q/K/V projections)",
    "gather": "PyG gather-scatter path (fused=False)",
    "layer": "whole Diffuser layer (+ feed-forward, LayerNorms)",
    "sdpa": "dense attention (torch SDPA)",
    "sdpa_layer": "dense transformer layer (SDPA)",
    "lf_graphdiff": "graphdiff, hops=1, Longformer pattern",
    "longformer": "Hugging Face Longformer self-attention",
}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINES = ("-", "--", "-.", ":")


def plot(results: Dict[int, Dict[str, dict]], variants: List[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 5))
    for index, variant in enumerate(v for v in variants if v in PLOT_LABELS):
        pts = [
            (n, _total(row[variant]), row[variant]["peak_mb"])
            for n, row in results.items()
            if variant in row and _total(row[variant])
        ]
        if not pts:
            continue
        ns, ts, ms = zip(*pts)
        style = dict(
            marker=MARKERS[index % len(MARKERS)],
            linestyle=LINES[index % len(LINES)],
            label=PLOT_LABELS[variant],
        )
        ax_t.loglog(ns, ts, **style)
        ax_m.loglog(ns, [max(m, 1.0) for m in ms], **style)
    ax_t.set(
        xlabel="sequence length n (tokens)",
        ylabel="forward + backward time (s)",
        title="Time of one layer",
    )
    ax_m.set(
        xlabel="sequence length n (tokens)",
        ylabel="peak extra memory (MB)",
        title="Memory of one layer (cached structure excluded)",
    )
    for ax in (ax_t, ax_m):
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax_t.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=90))


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--n",
        type=positive_int,
        nargs="+",
        help="default: 1024 4096 16384 65536 (256 1024 with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test: n = 256, 1024 and 2 repeats, unless given",
    )
    parser.add_argument("--variants", nargs="+", default=ALL_VARIANTS, choices=ALL_VARIANTS)
    parser.add_argument("--heads", type=positive_int, default=8)
    parser.add_argument("--channels", type=positive_int, default=32)
    parser.add_argument("--hops", type=positive_int, default=5)
    parser.add_argument("--window", type=positive_int, default=64)
    parser.add_argument("--num-global", type=int, default=16)
    parser.add_argument("--num-random", type=int, default=16)
    parser.add_argument("--repeats", type=positive_int, help="default: 3 (2 with --quick)")
    parser.add_argument(
        "--growth-rounds",
        type=int,
        default=6,
        help="rounds of the interleaved growth measurement (0: skip it)",
    )
    parser.add_argument(
        "--pair-rounds",
        type=int,
        default=20,
        help="rounds of the interleaved one hop vs bare SpMMs measurement (0: skip it)",
    )
    parser.add_argument(
        "--max-gather-gb",
        type=float,
        default=12.0,
        help="skip the gather-scatter path when its estimate exceeds this",
    )
    parser.add_argument(
        "--max-sdpa-n",
        type=int,
        default=16384,
        help="skip dense SDPA and the SDPA layer above this n (quadratic time)",
    )
    parser.add_argument("--timeout", type=positive_float, default=1800.0, help="per variant and n")
    parser.add_argument("--plot", action="store_true", help="also save a PNG under --out")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write table (markdown), raw JSON and plot to this folder",
    )
    parser.add_argument(
        "--reuse-freed-memory",
        action="store_true",
        help="time with glibc reusing freed memory (no page faults per step)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    # Without --out, a plot would replace the committed benchmarks/results/bench_layer.png
    # (the committed result) and leave the table of another run beside it.
    if args.plot and args.out is None:
        parser.error("--plot needs --out")
    args.n = args.n or ([256, 1024] if args.quick else [1024, 4096, 16384, 65536])
    args.repeats = args.repeats or (2 if args.quick else 3)
    variants = list(args.variants)
    if "longformer" in variants:
        try:
            import transformers  # noqa: F401
        except ImportError:
            print(
                "note: transformers is not installed (pip install graphdiff[bench]); "
                "skipping the HF Longformer baseline"
            )
            variants.remove("longformer")

    import torch

    setting = (
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; H={args.heads}, "
        f"C={args.channels}, K={args.hops}, pattern Window({args.window}) | "
        f"Global({args.num_global}) | Random({args.num_random}); median of "
        f"{args.repeats} runs after a warm-up"
    )
    if args.reuse_freed_memory:
        os.environ.update(REUSE_FREED_MEMORY)  # inherited by the timing processes
        setting += "; timed with " + " ".join(f"{k}={v}" for k, v in REUSE_FREED_MEMORY.items())
    print(setting, flush=True)
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    shape = dict(
        heads=args.heads,
        channels=args.channels,
        hops=args.hops,
        window=args.window,
        num_global=args.num_global,
        num_random=args.num_random,
    )
    results: Dict[int, Dict[str, dict]] = {}
    for n in args.n:
        results[n] = {}
        for variant in variants:
            if variant == "gather" and gather_gb(n, args.heads, args.channels) > args.max_gather_gb:
                results[n][variant] = {
                    "skipped": f"skipped: estimated ~"
                    f"{gather_gb(n, args.heads, args.channels):.0f} GB"
                }
            elif variant in DENSE and n > args.max_sdpa_n:
                results[n][variant] = {"skipped": f"skipped above n={args.max_sdpa_n}"}
            else:
                spec = dict(variant=variant, n=n, **shape, repeats=args.repeats)
                results[n][variant] = run_one(spec, args.timeout)
            r = results[n][variant]
            print(
                f"  n={n:>7} {variant:>12}: "
                + (
                    f"fwd {fmt(r['fwd'])} s, bwd {fmt(r.get('bwd'))} s, peak {r['peak_mb']:.0f} MB"
                    if "fwd" in r
                    else r.get("error") or r["skipped"]
                ),
                flush=True,
            )
    md = table(results, variants)
    checks = targets(results)
    growth: Dict[str, Dict[int, List[float]]] = {}
    lengths = {variant: lengths_run(results, variant) for variant in INTERLEAVED_GROWTH}
    lengths = {variant: ns for variant, ns in lengths.items() if len(ns) > 1}
    if lengths and args.growth_rounds > 0:
        growth_checks, growth = growth_lines(shape, lengths, args.growth_rounds, args.timeout)
        checks += growth_checks
    hop_pairs: Dict[int, Dict[str, List[float]]] = {}
    if args.pair_rounds > 0:
        hop_checks, hop_pairs = hop_lines(shape, results, args.pair_rounds, args.timeout)
        checks += hop_checks
    print("\n" + md + "\n")
    print("\n".join(checks))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        command = rerun_command("bench_layer.py", argv)
        ended = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
        header = (
            f"# bench_layer: one attention diffusion layer vs baselines\n\n"
            f"Command: `{command}`\n\n{setting}. "
            f"Commit {git_revision()}, measured {started} to {ended} UTC.\n\n"
        )
        report = header + md + "\n\n" + "".join(f"- {c}\n" for c in checks)
        atomic_write(args.out / "bench_layer.md", lambda f: f.write(report), text=True)
        raw = {
            "by_n": {str(n): row for n, row in results.items()},
            "growth": {
                variant: {str(n): t for n, t in by_n.items()} for variant, by_n in growth.items()
            },
            "hop_vs_bare": {str(n): t for n, t in hop_pairs.items()},
        }
        atomic_write(
            args.out / "bench_layer.json", lambda f: json.dump(raw, f, indent=1), text=True
        )
        if args.plot:
            plot(results, variants, args.out / "bench_layer.png")


if __name__ == "__main__":
    main()
