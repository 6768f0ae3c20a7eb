"""Resident memory of a training run on batches of random lengths.

Trains the ``tiny`` model (sequence classification, random tokens and labels, AdamW) on
batches of ``--batch-size`` sequences whose lengths are drawn uniformly from
``[--min-len, --max-len]``, so that almost every batch has lengths never seen before. Like
``graphdiff train``, it hands the allocator's free memory back to the system
(:func:`graphdiff.train.release_free_memory`) every ``--trim-every`` steps (``graphdiff
train``'s ``--log-every``, 10 by default; 0 never). Every ``--every`` steps it prints the
process's resident set size (RSS), the highest RSS seen after any step so far, and the bytes
that :mod:`graphdiff.cache` keeps; it exits with status 1 when the final RSS exceeds
``--limit-mb``.

Usage::

    python benchmarks/bench_memory.py                       # 600 steps, lengths 50-2,000
    python benchmarks/bench_memory.py --trim-every 0        # without trimming
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

from bench_common import rss_mb

from graphdiff.cli_types import positive_int


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=positive_int, default=600)
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--min-len", type=positive_int, default=50)
    parser.add_argument("--max-len", type=positive_int, default=2000)
    parser.add_argument(
        "--every",
        type=positive_int,
        default=50,
        help="print RSS and the cache's size every this many steps",
    )
    parser.add_argument(
        "--limit-mb",
        type=float,
        default=1000.0,
        help="exit with status 1 when the final RSS exceeds this (MiB)",
    )
    parser.add_argument(
        "--budget-mb",
        type=float,
        default=None,
        help="graphdiff.cache's byte budget in MiB (default: the library's)",
    )
    parser.add_argument(
        "--trim-every",
        type=int,
        default=10,
        help="steps between releases of the allocator's free memory (0: never)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.trim_every < 0:
        parser.error(f"--trim-every must be >= 0, got {args.trim_every}")
    if args.min_len > args.max_len:
        parser.error(f"--min-len ({args.min_len}) must not exceed --max-len ({args.max_len})")

    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    import graphdiff.cache
    from graphdiff.models import DiffuserConfig, DiffuserForSequenceClassification
    from graphdiff.train import release_free_memory

    if args.budget_mb is not None:
        graphdiff.cache.set_budget(int(args.budget_mb * 2**20))
    torch.manual_seed(args.seed)
    config = DiffuserConfig.tiny(vocab_size=256, max_len=args.max_len)
    model = DiffuserForSequenceClassification(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(args.seed)
    print(
        f"tiny model, {args.steps} steps of {args.batch_size} sequences of "
        f"{args.min_len}-{args.max_len} tokens; start: RSS {rss_mb():.0f} MiB",
        flush=True,
    )
    start, peak = time.perf_counter(), 0.0
    for step in tqdm(range(1, args.steps + 1), desc="steps", file=sys.stderr):
        lengths = torch.randint(args.min_len, args.max_len + 1, (args.batch_size,), generator=gen)
        longest = int(lengths.max())
        tokens = torch.randint(1, config.vocab_size, (args.batch_size, longest), generator=gen)
        mask = torch.arange(longest) < lengths.unsqueeze(1)
        labels = torch.randint(config.num_classes, (args.batch_size,), generator=gen)
        loss = F.cross_entropy(model(tokens, mask), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        peak = max(peak, rss_mb())
        if args.trim_every and step % args.trim_every == 0:
            release_free_memory()
        if step % args.every == 0 or step == args.steps:
            tqdm.write(
                f"step {step:5d}  RSS {rss_mb():7.0f} MiB  highest {peak:7.0f} MiB  cache "
                f"{graphdiff.cache.cached_bytes() / 2**20:7.1f} MiB  "
                f"({time.perf_counter() - start:.0f} s)",
                file=sys.stdout,
            )
    final = rss_mb()
    verdict = "within" if final <= args.limit_mb else "OVER"
    print(
        f"final RSS {final:.0f} MiB (highest after a step {peak:.0f} MiB): {verdict} the limit "
        f"of {args.limit_mb:.0f} MiB"
    )
    return 0 if final <= args.limit_mb else 1


if __name__ == "__main__":
    sys.exit(main())
