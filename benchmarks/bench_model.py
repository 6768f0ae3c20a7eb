"""Training throughput and peak memory of a whole Diffuser model.

One training step is the forward pass, the backward pass and an AdamW step on the
cross-entropy of a sequence classification, on ``batch`` random sequences of ``length``
tokens. The vocabulary is the preset's (50,265 for ``paper_base``: the embedding and its
gradient count in memory), at least 256 (byte-level tokens, as graphdiff's tasks use).

**Variants** (the default table)::

    python benchmarks/bench_model.py [--preset small] [--length 1024 4096 ...] [--batch 1]
        [--steps 5] [--skip-reference] [--peers] [--compile] [--out FILE]

``graphdiff K=5`` (the preset: fused core, ``K`` hops) against the same model with ``K=1,
alpha=0`` (plain sparse attention), the same model on PyG's gather-scatter reference path
(``fused=False``; ``--skip-reference`` leaves it out: about 18 GB at 16k tokens) and, with
``--peers`` when ``transformers`` is installed, Hugging Face models of the same size (hidden
width, layers, heads, feed-forward width, vocabulary, positions, RoBERTa's classification
head), randomly initialised from their configs:

- ``HF Longformer``: ``attention_window`` = the pattern's window, global attention
  (``global_attention_mask``) on the pattern's global tokens, one hop.
- ``HF BigBird``: ``block_sparse`` attention with ``block_size`` = the pattern's window and
  ``num_random_blocks`` = the fewest whole blocks that hold the pattern's random keys (one for
  ``small``'s 8 and ``paper_base``'s 64 random keys, which one block of 64 matches exactly).
  BigBird fixes the rest: a window of three blocks and two global blocks (the first and the
  last). At ``length <= (5 + 2 num_random_blocks) block_size`` it falls back to full attention
  by itself; the table then says so.
- ``HF RoBERTa, SDPA``: dense attention on torch's fused ``scaled_dot_product_attention``.

With them, ``graphdiff K=5, Longformer's pattern``: graphdiff's model on HF Longformer's edges
(``Window(window) | Global(num_global)``, about two thirds of the ``diffuser()`` pattern's
edges), which sets the cost of five hops against Longformer's one apart from the pattern's.

With ``--compile``, ``graphdiff K=5, compiled``: the same model under
``torch.compile(fullgraph=True, dynamic=True)`` (inductor) with :data:`COMPILE_OPTIONS`,
called on the batch prepared eagerly at each step (``Diffuser.prepare``, as the eager model
does inside); its warm-up step compiles.

The variants are built in one process and alternate step by step
(:func:`bench_common.alternate`) for ``--steps`` rounds after one warm-up step each.
``tokens / s`` is the median over the rounds; the ratio is the median of the per-round ratios
to ``graphdiff K=5``, in which a drift of the machine cancels. Attention dropout is off in
every variant of this table (torch's fused dense CPU kernel has none: with it SDPA falls back
to a path of quadratic memory); the other dropouts are the preset's.

**Where the time goes** (``--profile``)::

    python benchmarks/bench_model.py --profile [--preset small] [--length 4096 ...]
        [--steps 3] [--out FILE]

Milliseconds per training step of ``graphdiff K=5`` and ``graphdiff K=1`` in each part
(:data:`PARTS`): building or finding the batch's structure, the embeddings, the Q/K/V and
output projections, the attention kernels (scores, softmax, hops: everything inside
``AttentionDiffusion`` but its projections), the feed-forward block, the LayerNorms with the
residuals and dropouts, the classification head with the loss, and the optimizer, each
forward and backward. torch.profiler's self CPU time of every op goes to the part of the
module it ran in (a profiler scope opened by forward hooks); a backward op goes to the part
of the forward op that created its autograd node (the same sequence number). "autograd,
other" is backward work of no forward op, such as accumulating gradients. The profiler's own
overhead makes the sum larger than the step time measured without it, which the table gives
too.

**Memory savers** (``--savers``)::

    python benchmarks/bench_model.py --savers [fp32 checkpointing bf16 checkpointing+bf16]
        [--preset P --length N ...] [--steps 2] [--out FILE]

``fp32``; ``checkpointing``: per-layer gradient checkpointing
(``DiffuserConfig(gradient_checkpointing=True)``); ``bf16``: the forward pass under
``torch.autocast("cpu", dtype=torch.bfloat16)``, as ``graphdiff train --precision bf16``
runs it; ``checkpointing+bf16``: both. Without a variant, all four. Each (preset, length,
variant) runs in a fresh subprocess of this script, so that its peak memory is its own: the
peak resident memory of that process (``ru_maxrss``: Python, torch, model, optimizer state and
the step), and that peak minus the resident memory before the first step (model and inputs
built). ``--steps`` timed steps follow one warm-up step; ``tokens / s`` is the tokens of a step
over the median step time. Ratios are against ``fp32`` at the same preset and length. Without
``--preset`` and ``--length`` the table has :data:`SAVER_ROWS`: ``paper_base`` at 4,096
tokens and ``small`` at 16,384 with each variant, and ``paper_base`` at 16,384 with
checkpointing only (in fp32 it needs about 30 GB). Each step prints its time, so that a slow
row shows it is alive.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from bench_common import alternate, paired_ratios, rerun_command, rss_mb

from graphdiff.cli_types import positive_float, positive_int
from graphdiff.io import atomic_write_text
from graphdiff.models import MODEL_PRESETS, DiffuserConfig, preset_config
from graphdiff.models import DiffuserForSequenceClassification as Classifier
from graphdiff.patterns import BlockWindow, Global, PatternUnion, Random, Window

BASELINE = "graphdiff K=5"
# With --peers: graphdiff K=5 on HF Longformer's edges (its window, its global tokens).
LONGFORMER_PATTERN = "graphdiff K=5, Longformer's pattern"
# CLI name: (name in the table, gradient checkpointing, bf16 autocast).
SAVERS: Dict[str, Tuple[str, bool, bool]] = {
    "fp32": ("fp32", False, False),
    "checkpointing": ("gradient checkpointing", True, False),
    "bf16": ("bf16 autocast", False, True),
    "checkpointing+bf16": ("checkpointing + bf16", True, True),
}
# (preset, length, variants) of ``--savers`` without --preset and --length.
SAVER_ROWS: List[Tuple[str, int, Tuple[str, ...]]] = [
    ("paper_base", 4096, tuple(SAVERS)),
    ("small", 16384, tuple(SAVERS)),
    ("paper_base", 16384, ("checkpointing", "checkpointing+bf16")),
]

Forward = Callable[[], torch.Tensor]  # one forward pass: logits [B, num_classes]
# Inductor's options for --compile. fallback_random: dropout draws its masks from torch's
# generator, as eager does (the same masks for a seed), not from inductor's own, whose C++
# for the CPU draws one element at a time (docs/performance.md, "Compiled").
COMPILE_OPTIONS = {"fallback_random": True}


# ------------------------------------------------------------------------------ shared


def model_config(preset: str, length: int, **overrides) -> DiffuserConfig:
    """The preset at ``max_len = length`` with a vocabulary of at least 256 tokens."""
    vocab_size = max(preset_config(preset).vocab_size, 256)
    return preset_config(preset, vocab_size=vocab_size, max_len=length, **overrides)


def random_batch(config: DiffuserConfig, batch: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``tokens [batch, max_len]`` drawn from ``[2, vocab_size)`` (neither graphdiff's nor
    RoBERTa's padding id) and an all-True ``mask``."""
    tokens = torch.randint(2, config.vocab_size, (batch, config.max_len))
    return tokens, torch.ones_like(tokens, dtype=torch.bool)


def training_step(
    model: torch.nn.Module, forward: Forward, batch: int, bf16: bool = False
) -> Callable[[], None]:
    """One AdamW step on the cross-entropy of ``forward()``'s logits against class 0, the
    forward pass under bfloat16 autocast when ``bf16`` (as ``graphdiff train`` runs it)."""
    labels = torch.zeros(batch, dtype=torch.long)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(forward(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def transformers_version() -> Optional[str]:
    """The installed ``transformers`` version, or ``None`` when it is not installed."""
    if importlib.util.find_spec("transformers") is None:
        return None
    import transformers

    return transformers.__version__


# --------------------------------------------------------------------------- variants


def graphdiff_variant(
    config: DiffuserConfig, tokens: torch.Tensor, mask: torch.Tensor, fused: bool = True
) -> Tuple[torch.nn.Module, Forward]:
    model = Classifier(config).train()
    for layer in model.diffuser.layers:
        layer.attention.fused = fused
    return model, lambda: model(tokens, mask)


def compiled_variant(
    config: DiffuserConfig, tokens: torch.Tensor, mask: torch.Tensor
) -> Tuple[torch.nn.Module, Forward]:
    model = Classifier(config).train()
    compiled = torch.compile(model, fullgraph=True, dynamic=True, options=COMPILE_OPTIONS)
    return model, lambda: compiled(model.diffuser.prepare(tokens, mask))


def pattern_sizes(config: DiffuserConfig) -> Tuple[int, int, int]:
    """``(window, num_global, num_random)`` of a ``diffuser()``-shaped pattern: a union of one
    window (``BlockWindow`` or ``Window``), ``Global(num)`` and ``Random(num)``, the sizes the
    Hugging Face peers are given."""
    pattern = config.build_pattern()
    parts = pattern.parts if isinstance(pattern, PatternUnion) else (pattern,)
    windows = [
        p for p in parts if isinstance(p, BlockWindow) or (type(p) is Window and p.dilation == 1)
    ]
    globals_ = [p for p in parts if isinstance(p, Global) and p.num is not None and not p.last]
    randoms = [p for p in parts if isinstance(p, Random)]
    if len(parts) != 3 or not len(windows) == len(globals_) == len(randoms) == 1:
        raise ValueError(
            f"--peers needs a pattern of one window, Global(num) and Random(num) (as "
            f"diffuser() builds), got {config.pattern!r}"
        )
    (window,), (glob,), (rand,) = windows, globals_, randoms
    return window.size, glob.num, rand.num


def hf_sizes(config: DiffuserConfig) -> dict:
    """The config arguments that give a Hugging Face encoder graphdiff's size and head."""
    return dict(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        intermediate_size=config.ffn,
        hidden_act="gelu",
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.attention_dropout,
        layer_norm_eps=config.layer_norm_eps,
        type_vocab_size=1,
        num_labels=config.num_classes,
    )


def longformer_variant(
    config: DiffuserConfig, tokens: torch.Tensor, mask: torch.Tensor
) -> Tuple[torch.nn.Module, Forward]:
    from transformers import LongformerConfig, LongformerForSequenceClassification

    window, num_global, _ = pattern_sizes(config)
    model = LongformerForSequenceClassification(
        LongformerConfig(
            **hf_sizes(config),
            attention_window=window + window % 2,  # HF's window is even
            max_position_embeddings=config.max_len + 2,  # RoBERTa's positions start at 2
        )
    ).train()
    attention_mask = mask.long()
    global_mask = torch.zeros_like(attention_mask)
    global_mask[:, :num_global] = 1
    return (
        model,
        lambda: (
            model(
                input_ids=tokens, attention_mask=attention_mask, global_attention_mask=global_mask
            ).logits
        ),
    )


def bigbird_variant(
    config: DiffuserConfig, tokens: torch.Tensor, mask: torch.Tensor
) -> Tuple[torch.nn.Module, Forward]:
    from transformers import BigBirdConfig, BigBirdForSequenceClassification

    block, _, num_random = pattern_sizes(config)
    model = BigBirdForSequenceClassification(
        BigBirdConfig(
            **hf_sizes(config),
            attention_type="block_sparse",
            block_size=block,
            num_random_blocks=max(1, math.ceil(num_random / block)),
            # BigBird pads the sequence to whole blocks, positions included.
            max_position_embeddings=math.ceil(config.max_len / block) * block,
        )
    ).train()
    attention_mask = mask.long()
    return model, lambda: model(input_ids=tokens, attention_mask=attention_mask).logits


def roberta_variant(
    config: DiffuserConfig, tokens: torch.Tensor, mask: torch.Tensor
) -> Tuple[torch.nn.Module, Forward]:
    from transformers import RobertaConfig, RobertaForSequenceClassification

    model = RobertaForSequenceClassification(
        RobertaConfig(
            **hf_sizes(config),
            max_position_embeddings=config.max_len + 2,
            attn_implementation="sdpa",
        )
    ).train()
    attention_mask = mask.long()  # all ones: HF drops it and SDPA runs its fused kernel
    return model, lambda: model(input_ids=tokens, attention_mask=attention_mask).logits


PEERS = {
    "HF Longformer": longformer_variant,
    "HF BigBird": bigbird_variant,
    "HF RoBERTa, SDPA": roberta_variant,
}


def edges_per_token(model: torch.nn.Module) -> float:
    """The edges per token of a graphdiff model's pattern at its ``max_len``."""
    length = model.config.max_len
    return model.diffuser.pattern.num_edges(length) / length


def variant_notes(models: Dict[str, torch.nn.Module]) -> List[str]:
    """What a variant ran other than what its name says (read after its warm-up step), and
    how many edges graphdiff's two patterns have when both run."""
    notes = []
    bigbird = models.get("HF BigBird")
    if bigbird is not None and bigbird.bert.attention_type != "block_sparse":
        notes.append("HF BigBird fell back to full attention: the sequence is too short for blocks")
    if LONGFORMER_PATTERN in models:
        notes.append(
            "edges per token: "
            + ", ".join(
                f"{name} {edges_per_token(models[name]):.1f}"
                for name in (BASELINE, LONGFORMER_PATTERN)
            )
        )
    return notes


def compare_variants(
    preset: str, length: int, batch: int, reference: bool, peers: bool, compiled: bool = False
) -> Dict[str, Tuple[torch.nn.Module, Forward]]:
    """Every variant of the default table, by name, ``graphdiff K=5`` first; the same seed
    before each model and the same batch for all."""
    config = model_config(preset, length, attention_dropout=0.0)
    one_hop = model_config(preset, length, attention_dropout=0.0, hops=1, alpha=0.0)
    torch.manual_seed(0)
    tokens, mask = random_batch(config, batch)
    builders: Dict[str, Callable[[], Tuple[torch.nn.Module, Forward]]] = {
        BASELINE: lambda: graphdiff_variant(config, tokens, mask),
        "graphdiff K=1": lambda: graphdiff_variant(one_hop, tokens, mask),
    }
    if compiled:
        builders["graphdiff K=5, compiled"] = lambda: compiled_variant(config, tokens, mask)
    if reference:
        builders["graphdiff K=5, gather-scatter reference"] = lambda: graphdiff_variant(
            config, tokens, mask, fused=False
        )
    if peers:
        window, num_global, _ = pattern_sizes(config)
        longformer_pattern = model_config(
            preset,
            length,
            attention_dropout=0.0,
            pattern=f"Window({window}) | Global({num_global})",
        )
        builders[LONGFORMER_PATTERN] = lambda: graphdiff_variant(longformer_pattern, tokens, mask)
        for name, build in PEERS.items():
            builders[name] = lambda build=build: build(config, tokens, mask)
    variants = {}
    for name, build in builders.items():
        torch.manual_seed(0)
        variants[name] = build()
    return variants


def compare_rows(length: int, batch: int, times: Dict[str, List[float]]) -> List[str]:
    """``| tokens | variant | tokens / s | ratio to graphdiff K=5 |`` rows of one length from
    the per-round step times of every variant."""
    tokens = batch * length
    rows = []
    for name, seconds in times.items():
        ratio, _ = paired_ratios(times[BASELINE], seconds)  # rate ratio = inverse time ratio
        rate = tokens / statistics.median(seconds)
        rows.append(f"| {length:,} | {name} | {rate:,.0f} | {ratio:.2f} |")
    return rows


def run_compare(args: argparse.Namespace) -> List[str]:
    version = transformers_version()
    peers = args.peers and version is not None
    lines = [
        f"preset {args.preset}, {args.batch} sequence(s) per step, pattern "
        f"{model_config(args.preset, max(args.length)).pattern}, attention dropout off, "
        f"torch {torch.__version__}"
        + (f", transformers {version}" if peers else "")
        + f", {torch.get_num_threads()} threads, "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC",
        f"median of {args.steps} alternated steps after one warm-up step each; ratio: median "
        f"of the per-step ratios to {BASELINE}",
    ]
    if args.peers and version is None:
        lines.append(
            "transformers is not installed (pip install graphdiff[bench]): the rows of HF "
            "Longformer, BigBird and RoBERTa are skipped"
        )
    lines += [
        "",
        f"| tokens | variant | tokens / s | ratio to {BASELINE} |",
        "|---:|---|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    notes = []
    for length in args.length:
        variants = compare_variants(
            args.preset, length, args.batch, not args.skip_reference, peers, args.compile
        )
        steps = {
            name: training_step(model, forward, args.batch)
            for name, (model, forward) in variants.items()
        }
        print(f"{length:,} tokens: warm-up", file=sys.stderr, flush=True)
        alternate(steps, 1)
        notes += [
            f"{length:,} tokens: {note}"
            for note in variant_notes({name: model for name, (model, _) in variants.items()})
        ]
        times = alternate(
            steps,
            args.steps,
            lambda round_: print(
                f"{length:,} tokens: step {round_}/{args.steps}", file=sys.stderr, flush=True
            ),
        )
        rows = compare_rows(length, args.batch, times)
        lines += rows
        print("\n".join(rows), flush=True)
    if notes:
        lines += ["", *notes]
        print("\n".join(["", *notes]), flush=True)
    return lines


# ------------------------------------------------------------------------------ savers


def saver_worker(spec: dict) -> dict:
    """One variant of the savers table, in this (fresh) process: the step times and the peak
    resident memory, ``{"step_s": [...], "peak_mb": ..., "before_mb": ...}``."""
    _, checkpointing, bf16 = SAVERS[spec["saver"]]
    label = f"{spec['preset']}, {spec['length']:,} tokens, {spec['saver']}"
    torch.manual_seed(0)
    config = model_config(spec["preset"], spec["length"], gradient_checkpointing=checkpointing)
    tokens, mask = random_batch(config, spec["batch"])
    model, forward = graphdiff_variant(config, tokens, mask)
    step = training_step(model, forward, spec["batch"], bf16=bf16)
    before_mb = rss_mb()
    print(f"{label}: built, {before_mb:,.0f} MiB resident", file=sys.stderr, flush=True)
    seconds = []
    for i in range(spec["steps"] + 1):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
        what = "warm-up step" if i == 0 else f"step {i}/{spec['steps']}"
        print(f"{label}: {what} {seconds[-1]:.1f} s", file=sys.stderr, flush=True)
    # Linux reports ru_maxrss in KiB.
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step_s": seconds[1:], "peak_mb": peak_mb, "before_mb": before_mb}


def run_saver(spec: dict, timeout: float) -> dict:
    """:func:`saver_worker` in a fresh subprocess (its progress goes to this process's
    stderr), or ``{"error": why}``."""
    command = [sys.executable, __file__, "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    if proc.returncode < 0:
        killed = f"killed by signal {-proc.returncode}"
        return {"error": killed + (" (out of memory?)" if proc.returncode == -9 else "")}
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode} (its error is printed above)"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def saver_rows(preset: str, length: int, batch: int, results: Dict[str, dict]) -> List[str]:
    """``| preset | tokens | variant | tokens / s | s / step | peak RSS | peak - before |
    tokens / s vs fp32 | peak vs fp32 |`` rows of one preset and length."""
    fp32 = results.get("fp32", {})
    rows = []
    for saver, result in results.items():
        head = f"| {preset} | {length:,} | {SAVERS[saver][0]} |"
        if "error" in result:
            rows.append(f"{head} failed: {result['error']} | - | - | - | - | - |")
            continue
        step_s = statistics.median(result["step_s"])
        speed = peak = "-"
        if "step_s" in fp32:
            speed = f"{statistics.median(fp32['step_s']) / step_s:.2f}"
            peak = f"{result['peak_mb'] / fp32['peak_mb']:.2f}"
        rows.append(
            f"{head} {batch * length / step_s:,.0f} | {step_s:.2f} | {result['peak_mb']:,.0f} | "
            f"{result['peak_mb'] - result['before_mb']:,.0f} | {speed} | {peak} |"
        )
    return rows


def saver_plan(args: argparse.Namespace) -> List[Tuple[str, int, Sequence[str]]]:
    """``(preset, length, variants)`` rows of the savers table."""
    chosen = args.savers or list(SAVERS)
    if args.preset is None and args.length is None:
        plan = [
            (preset, length, [s for s in savers if s in chosen])
            for preset, length, savers in SAVER_ROWS
        ]
        return [row for row in plan if row[2]]
    return [(args.preset or "small", length, chosen) for length in args.length or [4096]]


def run_savers(args: argparse.Namespace) -> List[str]:
    lines = [
        f"{args.batch} sequence(s) per step, median of {args.steps} steps after one warm-up "
        f"step, each variant in a fresh process; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} "
        "UTC",
        "peak RSS: the process's peak resident memory; before: its resident memory with the "
        "model and inputs built, before the first step (MiB)",
        "",
        "| preset | tokens | variant | tokens / s | s / step | peak RSS (MiB) | peak - before "
        "(MiB) | tokens / s vs fp32 | peak vs fp32 |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    for preset, length, savers in saver_plan(args):
        results = {}
        for saver in savers:
            print(f"{preset}, {length:,} tokens, {saver}: starting", file=sys.stderr, flush=True)
            spec = dict(preset=preset, length=length, batch=args.batch, steps=args.steps)
            results[saver] = run_saver(dict(spec, saver=saver), args.timeout)
        rows = saver_rows(preset, length, args.batch, results)
        lines += rows
        print("\n".join(rows), flush=True)
    return lines


# ------------------------------------------------------------------------------ profile

# Where a step's time goes: each module of the model belongs to one part (the first pattern
# of PART_OF_MODULE its qualified name matches; the classifier head and the loss belong to
# none of them).
PART_OF_MODULE: List[Tuple[str, str]] = [
    (r"diffuser\.embeddings", "embeddings"),
    (r"diffuser\.layers\.\d+\.(attention\.lin_\w+|output)", "projections"),
    (r"diffuser\.layers\.\d+\.attention", "attention kernels"),
    (r"diffuser\.layers\.\d+\.ffn", "feed-forward"),
    (r"diffuser\.layers\.\d+", "norms, residuals, dropout"),
]
PARTS = (
    "structure",
    "embeddings",
    "projections",
    "attention kernels",
    "feed-forward",
    "norms, residuals, dropout",
    "head and loss",
    "optimizer",
)
SCOPE = "part: "  # the profiler label of a part's scope


def mark_parts(model: torch.nn.Module) -> Callable[[], None]:
    """Opens a profiler scope ``"part: <name>"`` around the forward pass of every module of
    :data:`PART_OF_MODULE` and around ``model.diffuser.prepare`` (the structure); returns the
    function that removes the marks."""
    handles, open_scopes = [], []

    def enter(name: str) -> Callable[..., None]:
        def hook(*_: object) -> None:
            scope = torch.profiler.record_function(SCOPE + name)
            scope.__enter__()
            open_scopes.append(scope)

        return hook

    def leave(*_: object) -> None:
        open_scopes.pop().__exit__(None, None, None)

    for qualified, module in model.named_modules():
        part = next((p for pattern, p in PART_OF_MODULE if re.fullmatch(pattern, qualified)), None)
        if part is not None:
            handles.append(module.register_forward_pre_hook(enter(part)))
            handles.append(module.register_forward_hook(leave))
    diffuser = model.diffuser
    prepare = diffuser.prepare

    def marked_prepare(*args: object, **kwargs: object) -> object:
        with torch.profiler.record_function(SCOPE + "structure"):
            return prepare(*args, **kwargs)

    diffuser.prepare = marked_prepare

    def unmark() -> None:
        for handle in handles:
            handle.remove()
        del diffuser.prepare

    return unmark


def part_of_event(event: object, forward_parts: Dict[int, str]) -> str:
    """The part an event's own time belongs to: that of its innermost enclosing scope; in the
    backward pass, that of the forward op whose autograd node it runs (matched by sequence
    number in ``forward_parts``), else "autograd, other"; optimizer steps and zeroing to
    "optimizer"; outside all of them, "head and loss"."""
    for enclosing in (event, *ancestors(event)):
        name = enclosing.name
        if name.startswith(SCOPE):
            return name[len(SCOPE) :]
        if name.startswith("Optimizer."):
            return "optimizer"
        if name.startswith("autograd::engine::evaluate_function"):
            return forward_parts.get(enclosing.sequence_nr, "autograd, other")
    return "head and loss"


def ancestors(event: object) -> List[object]:
    """The event's enclosing events, innermost first."""
    chain = []
    while event.cpu_parent is not None:
        event = event.cpu_parent
        chain.append(event)
    return chain


def attribute_events(events: Sequence[object]) -> List[Tuple[object, str]]:
    """Every profiler event with the part (:data:`PARTS` or "autograd, other") its own time
    belongs to (:func:`part_of_event`): the forward ops' parts first, by sequence number, then
    every event's."""
    forward_parts: Dict[int, str] = {}
    for event in events:
        if event.sequence_nr >= 0 and not event.name.startswith("autograd::"):
            forward_parts.setdefault(event.sequence_nr, part_of_event(event, {}))
    return [(event, part_of_event(event, forward_parts)) for event in events]


def profile_events(model: torch.nn.Module, step: Callable[[], None], steps: int) -> List[object]:
    """torch.profiler's events of ``steps`` calls of ``step`` with the model's parts marked
    (:func:`mark_parts`)."""
    unmark = mark_parts(model)
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
    finally:
        unmark()
    return prof.events()


def profile_parts(model: torch.nn.Module, step: Callable[[], None], steps: int) -> Dict[str, float]:
    """Milliseconds per training step of each of :data:`PARTS` (and "autograd, other": backward
    work of no forward op of the model, such as accumulating gradients), from torch.profiler's
    self CPU time of every op over ``steps`` steps."""
    totals = dict.fromkeys((*PARTS, "autograd, other"), 0.0)
    for event, part in attribute_events(profile_events(model, step, steps)):
        totals[part] += event.self_cpu_time_total / 1e3 / steps
    return totals


def profile_row(label: str, milliseconds: Sequence[float]) -> str:
    """``| label | ms | ms |``: one row of the profile table."""
    return f"| {label} | " + " | ".join(f"{ms:.1f}" for ms in milliseconds) + " |"


def run_profile(args: argparse.Namespace) -> List[str]:
    variants = {
        BASELINE: {},
        "graphdiff K=1": dict(hops=1, alpha=0.0),
    }
    lines = [
        f"preset {args.preset}, {args.batch} sequence(s) per step, pattern "
        f"{model_config(args.preset, max(args.length)).pattern}, attention dropout off, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC",
        f"self CPU time of torch.profiler over {args.steps} steps after one warm-up step, "
        "per step; the step time is measured without the profiler",
    ]
    print("\n".join(lines), flush=True)
    for length in args.length:
        header = [
            "",
            f"| {length:,} tokens | " + " | ".join(f"{name} (ms)" for name in variants) + " |",
            "|---|" + "---:|" * len(variants),
        ]
        columns, step_ms = {}, {}
        for name, overrides in variants.items():
            config = model_config(args.preset, length, attention_dropout=0.0, **overrides)
            torch.manual_seed(0)
            tokens, mask = random_batch(config, args.batch)
            model, forward = graphdiff_variant(config, tokens, mask)
            step = training_step(model, forward, args.batch)
            step()  # warm-up: builds and caches the structure
            step_ms[name] = 1e3 * statistics.median(alternate({name: step}, args.steps)[name])
            print(f"{length:,} tokens, {name}: profiling", file=sys.stderr, flush=True)
            columns[name] = profile_parts(model, step, args.steps)
        rows = [
            *(
                profile_row(part, [columns[name][part] for name in variants])
                for part in columns[BASELINE]
            ),
            profile_row("sum of the parts", [sum(columns[name].values()) for name in variants]),
            profile_row("step, without the profiler", list(step_ms.values())),
        ]
        lines += header + rows
        print("\n".join(header + rows), flush=True)
    return lines


# -------------------------------------------------------------------------------- main


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=MODEL_PRESETS, help="default: small")
    parser.add_argument(
        "--length", type=positive_int, nargs="+", help="tokens per sequence (default: 4096)"
    )
    parser.add_argument(
        "--batch", type=positive_int, default=1, help="sequences per step (default: 1)"
    )
    parser.add_argument(
        "--steps", type=positive_int, help="timed steps per variant (default: 5; --savers: 2)"
    )
    parser.add_argument(
        "--skip-reference", action="store_true", help="skip the slow gather-scatter variant"
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="add HF Longformer, BigBird and RoBERTa (SDPA) of the same size",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="add graphdiff K=5 under torch.compile(fullgraph=True, dynamic=True)",
    )
    parser.add_argument(
        "--savers",
        nargs="*",
        choices=SAVERS,
        help="the memory savers table instead, of these variants (default: all)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="where a training step's time goes, part by part, instead of the variants table",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=7200.0,
        help="seconds per variant of --savers (default: 7200)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the table to this markdown file"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(saver_worker(json.loads(args.worker))))
        return
    if args.savers is not None or args.profile:
        if args.peers or args.skip_reference or args.compile:
            parser.error(
                "--peers, --skip-reference and --compile belong to the variants table, not "
                "--savers or --profile"
            )
        if args.savers is not None and args.profile:
            parser.error("--savers and --profile are two different tables: run them apart")
    if args.savers is not None:
        args.steps = args.steps or 2
        lines = run_savers(args)
    elif args.profile:
        args.preset, args.length = args.preset or "small", args.length or [4096]
        args.steps = args.steps or 3
        lines = run_profile(args)
    else:
        args.preset, args.length = args.preset or "small", args.length or [4096]
        args.steps = args.steps or 5
        if args.peers:
            try:
                pattern_sizes(model_config(args.preset, args.length[0]))
            except ValueError as error:
                parser.error(str(error))
        lines = run_compare(args)
    if args.out:
        command = rerun_command("bench_model.py", argv)
        atomic_write_text(args.out, "\n".join([f"`{command}`", "", *lines, ""]))


if __name__ == "__main__":
    main()
