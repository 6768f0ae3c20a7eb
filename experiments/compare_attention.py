"""Diffuser against sparse-only and dense attention: test accuracy (or bpc) and throughput.

Protocol. Every task trains three variants of the same ``tiny`` model (identical parameters, so
equal size) for the same number of steps, batch size, learning-rate schedule and data:

- ``diffuser``: the task's sparse pattern, ``hops=5, alpha=0.1`` (the paper's setting);
- ``sparse``: the same pattern, ``hops=1, alpha=0.0`` (plain sparse attention, K = 1);
- ``dense``: ``Full()`` pattern, ``hops=1, alpha=0.0`` (full attention, as sparse edges).

Tasks:

- ``multihop``: the synthetic task of :mod:`graphdiff.tasks.multihop` (length 128,
  ``Window(8)``, 2 layers, CLS pooling): the key sits 9..16 positions from CLS, beyond the
  8-position reach of one hop per layer, so K = 1 on this pattern is at chance by construction;
  diffusion and dense attention can reach it.
- ``listops``: short generated ListOps (LRA's generator, 50..200 tokens, 10 classes) with the
  pattern ``diffuser(window=16, num_global=1, num_random=4)``; the data are written once to TSV
  files under ``OUT/data`` so that training does not spend its time generating trees.
- ``mlm``: masked language modelling on the offline corpus (:mod:`graphdiff.tasks.mlm`: Python's
  own documentation, byte tokens) in sequences of 1,024 tokens, pattern
  ``diffuser(window=64, num_global=8, num_random=8)``; reported as test bits per character
  (``bpc``, lower is better).
- ``retrieval``: the generated matching task of :mod:`graphdiff.tasks.retrieval` (are two
  512-token chunks from the same document?), the same pattern, two classes.

Defaults: 500 steps, batch 32, AdamW at lr 3e-3 with 10% warm-up and linear decay, seeds 0 1 2
(the long-sequence tasks ``mlm`` and ``retrieval`` use ``--steps`` and ``--batch-size`` too:
choose them for the time you have, e.g. ``--steps 200 --batch-size 4``).
Each (task, variant) runs for every seed; the seed sets the model initialisation, dropout and
data order (the data sets themselves are fixed). Reported: the task's metric (accuracy, or bpc
for ``mlm``) of the final model on the test split (no checkpoint selection), mean and sample
standard deviation over seeds, and the training throughput that :func:`graphdiff.train.train`
measures (non-padding tokens per second of wall time over the training steps, data loading
included, the final validation excluded).
Throughput depends on the machine and on whatever else runs on it: compare it within a table
(runs go seed by seed, the variants of a seed back to back, so slow drifts in load are shared).
One torch thread by default: on a CPU shared with other jobs, two intra-op threads ran the same
step up to ~20x slower than one (threads spin waiting for each other).

Every run writes ``OUT/runs/TASK/VARIANT/seedS/result.json`` atomically; a rerun skips runs
whose result exists with the same arguments, so an interrupted sweep resumes where it stopped.
The table goes to stdout, ``OUT/results.md`` and ``OUT/results.json``.

    python experiments/compare_attention.py                      # full sweep, 1 CPU thread
    python experiments/compare_attention.py --tasks multihop --seeds 0 --steps 200
    python experiments/compare_attention.py --quick --out /tmp/cmp  # seconds: a smoke run
    python experiments/compare_attention.py --tasks mlm retrieval --steps 200 --batch-size 4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence

import torch
from tqdm.auto import tqdm

from graphdiff.cli_types import distinct, positive_float, positive_int
from graphdiff.io import atomic_write_text
from graphdiff.tasks.listops import ListOps, write_listops_tsv
from graphdiff.train import TrainArgs, build_task, evaluate, train

VARIANTS: Dict[str, Dict[str, Any]] = {  # pattern None: the task's sparse pattern
    "diffuser": dict(pattern=None, hops=5, alpha=0.1),
    "sparse": dict(pattern=None, hops=1, alpha=0.0),
    "dense": dict(pattern="Full()", hops=1, alpha=0.0),
}


TASKS = ("multihop", "listops", "mlm", "retrieval")
LONG_PATTERN = "diffuser(window=64, num_global=8, num_random=8)"


@dataclasses.dataclass
class TaskSpec:
    pattern: str  # the sparse pattern of the diffuser and sparse variants
    task_args: Dict[str, Any]  # task constructor arguments (ListOps: those of the generator)
    split_sizes: Optional[Dict[str, int]] = None  # ListOps: examples written per split
    metric: str = "accuracy"  # the test metric reported: "accuracy" or "bpc" (lower is better)


def task_specs(steps: int, batch_size: int, quick: bool) -> Dict[str, TaskSpec]:
    """The experiment's tasks; ``quick`` shrinks them to a smoke run."""
    if quick:
        return {
            "multihop": TaskSpec("Window(8)", dict(length=32, num_samples=64)),
            "listops": TaskSpec(
                "diffuser(window=8, num_global=1, num_random=2)",
                dict(min_length=10, max_length=40),
                dict(train=64, val=32, test=32),
            ),
            "mlm": TaskSpec(
                "diffuser(window=8, num_global=1, num_random=2)", dict(max_len=64), metric="bpc"
            ),
            "retrieval": TaskSpec(
                "diffuser(window=8, num_global=1, num_random=2)",
                dict(max_len=64, num_samples=64),
            ),
        }
    return {
        # MultiHop's defaults: 10000 / 1000 / 1000 examples, length 128, Window(8), 2 layers.
        "multihop": TaskSpec("Window(8)", {}),
        # One pass over fresh examples: as many training trees as the run consumes.
        "listops": TaskSpec(
            "diffuser(window=16, num_global=1, num_random=4)",
            dict(min_length=50, max_length=200),
            dict(train=steps * batch_size, val=500, test=1000),
        ),
        "mlm": TaskSpec(LONG_PATTERN, dict(max_len=1024), metric="bpc"),
        "retrieval": TaskSpec(LONG_PATTERN, dict(max_len=512)),
    }


def listops_data(spec: TaskSpec, out: str) -> str:
    """Write the ListOps splits of ``spec`` as LRA TSV files once; return their directory."""
    sizes = spec.split_sizes
    args = spec.task_args
    data_dir = os.path.join(
        out,
        "data",
        f"listops_{args['min_length']}-{args['max_length']}_"
        f"{sizes['train']}-{sizes['val']}-{sizes['test']}",
    )
    os.makedirs(data_dir, exist_ok=True)
    for split, size in sizes.items():
        path = os.path.join(data_dir, f"basic_{split}.tsv")
        if not os.path.exists(path):  # written atomically: present means complete
            generator = ListOps(split, num_samples=size, **args)
            write_listops_tsv(path, (generator.tree(i) for i in range(size)))
    return data_dir


def train_args(
    task: str,
    variant: str,
    seed: int,
    spec: TaskSpec,
    data_dir: Optional[str],
    steps: int,
    batch_size: int,
    lr: float,
    device: str,
    out: str,
) -> TrainArgs:
    settings = VARIANTS[variant]
    task_args = dict(spec.task_args)
    if data_dir is not None:  # ListOps from its TSV files: only the length limit remains
        task_args = dict(max_len=spec.task_args["max_length"] + 1)
    return TrainArgs(
        task=task,
        preset="tiny",
        out=os.path.join(out, "runs", task, variant, f"seed{seed}"),
        pattern=settings["pattern"] or spec.pattern,
        hops=settings["hops"],
        alpha=settings["alpha"],
        task_args=task_args,
        data_dir=data_dir,
        max_steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        eval_every=steps,
        log_every=max(1, steps // 20),
        device=device,
        progress=False,
        overwrite=True,
    )  # a run without result.json is an unfinished one: start it again


def run_one(variant: str, args: TrainArgs) -> Dict[str, Any]:
    """Train, evaluate on the test split and record; reuse a finished run with the same args."""
    path = os.path.join(args.out, "result.json")
    recorded = dataclasses.asdict(args)
    if os.path.exists(path):
        with open(path) as handle:
            previous = json.load(handle)
        if previous["train_args"] == recorded and "test" in previous:  # this script's layout
            return previous
    started = time.perf_counter()
    result = train(args)
    test_set = build_task(args.task, "test", args.task_args, args.data_dir)
    device = next(result.model.parameters()).device
    test = evaluate(result.model, test_set, args.batch_size, device)
    record = {
        "task": args.task,
        "variant": variant,
        "seed": args.seed,
        "test": test,
        "train_loss": result.metrics["train_loss"],
        "tokens_per_second": result.metrics["tokens_per_second"],
        "parameters": sum(p.numel() for p in result.model.parameters()),
        "seconds": time.perf_counter() - started,
        "train_args": recorded,
    }
    atomic_write_text(path, json.dumps(record, indent=2))
    return record


def majority_accuracy(task: str, task_args: Dict[str, Any], data_dir: Optional[str]) -> float:
    """Test accuracy of always predicting the most frequent test label (an upper bound on
    chance)."""
    test_set = build_task(task, "test", task_args, data_dir)
    counts = Counter(int(test_set[i][-1]) for i in range(len(test_set)))  # label last
    return max(counts.values()) / len(test_set)


def summarise(records: List[Dict[str, Any]], metrics: Dict[str, str]) -> List[Dict[str, Any]]:
    """One row per (task, variant): the mean and sample standard deviation over seeds of the
    task's test metric (``metrics[task]``)."""
    rows = []
    for task in dict.fromkeys(r["task"] for r in records):
        for variant in VARIANTS:
            runs = [r for r in records if r["task"] == task and r["variant"] == variant]
            if not runs:
                continue
            values = [r["test"][metrics[task]] for r in runs]
            rows.append(
                {
                    "task": task,
                    "variant": variant,
                    "metric": metrics[task],
                    "seeds": len(runs),
                    "mean": statistics.mean(values),
                    "std": statistics.stdev(values) if len(runs) > 1 else 0.0,
                    "tokens_per_second": statistics.mean(r["tokens_per_second"] for r in runs),
                    "seconds": statistics.mean(r["seconds"] for r in runs),
                    "parameters": runs[0]["parameters"],
                }
            )
    return rows


def markdown(rows: List[Dict[str, Any]], majority: Dict[str, float]) -> str:
    lines = [
        "| task | variant | test metric (mean ± std) | train tokens/s (mean) | seeds | s per run |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['task']} | {row['variant']} "
            f"| {row['metric']} {row['mean']:.3f} ± {row['std']:.3f}"
            f" | {row['tokens_per_second']:,.0f} | {row['seeds']} | {row['seconds']:.0f} |"
        )
    for task, value in majority.items():
        lines.append(f"| {task} | majority class | accuracy {value:.3f} | | | |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=["multihop", "listops"],
        choices=TASKS,
        help="multihop and listops by default; mlm and retrieval are the long-sequence tasks",
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, help="default: 0 1 2 (0 with --quick)")
    parser.add_argument("--steps", type=positive_int, help="default: 500 (5 with --quick)")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--lr", type=positive_float, default=3e-3)
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="torch intra-op threads (on a busy shared CPU, more than 1 can be far slower)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/experiments")
    parser.add_argument(
        "--quick", action="store_true", help="tiny data, 5 steps, seed 0: a smoke run"
    )
    args = parser.parse_args(argv)
    # --quick changes the defaults only: explicit --steps and --seeds still hold.
    args.steps = args.steps or (5 if args.quick else 500)
    args.seeds = distinct(args.seeds or ([0] if args.quick else [0, 1, 2]), "--seeds", parser)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    specs = task_specs(args.steps, args.batch_size, args.quick)
    jobs, majority = [], {}
    for task in args.tasks:
        spec = specs[task]
        data_dir = listops_data(spec, args.out) if spec.split_sizes else None
        for seed in args.seeds:  # variants interleaved: a change in machine load hits them all
            for variant in args.variants:
                jobs.append(
                    (
                        variant,
                        train_args(
                            task,
                            variant,
                            seed,
                            spec,
                            data_dir,
                            args.steps,
                            args.batch_size,
                            args.lr,
                            args.device,
                            args.out,
                        ),
                    )
                )
        if spec.metric == "accuracy":
            majority[task] = majority_accuracy(task, jobs[-1][1].task_args, data_dir)
    records = []
    bar = tqdm(jobs, desc="runs", unit="run")
    for variant, job in bar:
        bar.set_postfix_str(os.path.relpath(job.out, os.path.join(args.out, "runs")))
        records.append(run_one(variant, job))
    rows = summarise(records, {task: specs[task].metric for task in args.tasks})
    table = markdown(rows, majority)
    seconds = time.perf_counter() - started
    command = " ".join(
        ["python experiments/compare_attention.py", *(sys.argv[1:] if argv is None else argv)]
    )
    header = (
        f"Command: `{command}`  \n"
        f"{args.steps} steps, batch {args.batch_size}, lr {args.lr}, preset tiny, "
        f"{args.threads} thread(s),"
        f" {platform.processor() or platform.machine()}; this invocation took {seconds:.0f} s"
        f" (skipped runs cost nothing).\n\n"
    )
    atomic_write_text(os.path.join(args.out, "results.md"), header + table + "\n")
    summary = {
        "settings": vars(args),
        "seconds": seconds,
        "rows": rows,
        "majority": majority,
        "runs": records,
    }
    atomic_write_text(os.path.join(args.out, "results.json"), json.dumps(summary, indent=2))
    print(table)
    return summary


if __name__ == "__main__":
    main()
