"""Training throughput of a Diffuser model (tokens per second), fused core against the reference.

    python benchmarks/bench_model.py [--preset small] [--length 4096] [--batch 2] [--steps 5]
        [--skip-reference] [--out FILE]

One training step = forward, backward and AdamW on a batch of ``batch`` sequences of
``length`` tokens. Variants, measured in the same run: the default fused path; the same model
with every layer on PyG's gather-scatter reference path (``fused=False``); and plain sparse
attention (``hops=1, alpha=0``). Ratios are against the default path.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import List, Optional

import torch
import torch.nn.functional as F
from bench_common import rerun_command

from graphdiff.cli_types import positive_int
from graphdiff.io import atomic_write_text
from graphdiff.models import DiffuserForSequenceClassification, preset_config


def throughput(
    model: torch.nn.Module, tokens: torch.Tensor, mask: torch.Tensor, steps: int
) -> float:
    labels = torch.zeros(tokens.size(0), dtype=torch.long)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = F.cross_entropy(model(tokens, mask), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up: builds and caches the pattern structure
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * int(mask.sum()) / (time.perf_counter() - start)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--length", type=positive_int, default=4096)
    parser.add_argument("--batch", type=positive_int, default=2)
    parser.add_argument("--steps", type=positive_int, default=5)
    parser.add_argument(
        "--skip-reference", action="store_true", help="skip the slow gather-scatter variant"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the table to this markdown file"
    )
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    config = preset_config(args.preset, vocab_size=256, max_len=args.length)
    tokens = torch.randint(2, 256, (args.batch, args.length))
    mask = torch.ones_like(tokens, dtype=torch.bool)
    variants = {
        "default (fused)": (config, True),
        "sparse attention only (K=1)": (
            preset_config(args.preset, vocab_size=256, max_len=args.length, hops=1, alpha=0.0),
            True,
        ),
    }
    if not args.skip_reference:
        variants["gather-scatter reference"] = (config, False)

    lines = [
        f"preset {args.preset}, {args.batch} x {args.length} tokens, pattern {config.pattern}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC",
        "",
        "| variant | tokens / s | ratio to default |",
        "|---|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    baseline = None
    for name, (variant_config, fused) in variants.items():
        model = DiffuserForSequenceClassification(variant_config).train()
        for layer in model.diffuser.layers:
            layer.attention.fused = fused
        rate = throughput(model, tokens, mask, args.steps)
        baseline = baseline or rate
        lines.append(f"| {name} | {rate:,.0f} | {rate / baseline:.2f} |")
        print(lines[-1], flush=True)
    if args.out:
        command = rerun_command("bench_model.py", argv)
        atomic_write_text(args.out, "\n".join([f"`{command}`", "", *lines, ""]))


if __name__ == "__main__":
    main()
