"""The ``graphdiff`` command: one sub-command per use of the library.

    graphdiff patterns diffuser --n 4096 --out runs/patterns
    graphdiff analyze --out runs/analysis
    graphdiff train --task multihop --preset tiny --out runs/multihop
    graphdiff evaluate --checkpoint runs/multihop/best.pt
    graphdiff demo --out runs/demo
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from typing import Any, Dict, List, Optional


def run_patterns(args: argparse.Namespace) -> int:
    from graphdiff.patterns import parse_pattern
    from graphdiff.patterns.stats import save_pattern_report

    save_pattern_report(parse_pattern(args.pattern), args.n, args.out, self_loops=not args.no_self_loops)
    return 0


def run_analyze(args: argparse.Namespace) -> int:
    from analysis.cli import main as analyze

    return analyze(args.rest)


def key_values(items: List[str]) -> Dict[str, Any]:
    """``["length=256", "seed=1"]`` -> ``{"length": 256, "seed": 1}`` (values are Python literals)."""
    values: Dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        try:
            values[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            values[key] = text
    return values


def run_train(args: argparse.Namespace) -> int:
    from graphdiff.train import TrainArgs, train

    options = {name: getattr(args, name) for name in (
        "task", "preset", "out", "pattern", "hops", "alpha", "data_dir", "max_steps", "epochs", "batch_size",
        "lr", "weight_decay", "warmup", "clip", "seed", "eval_every", "log_every", "stop_after", "resume",
        "workers", "device")}
    result = train(TrainArgs(**options, task_args=key_values(args.task_arg), model_args=key_values(args.model_arg)))
    if result.metrics and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result.metrics))
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from graphdiff.train.evaluation import evaluate_checkpoint

    print(json.dumps(evaluate_checkpoint(args.checkpoint, args.data, args.split, args.batch_size, args.truncate)))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from graphdiff.demo import run_demo as demo

    # Unset options keep run_demo's own defaults, written in one place.
    demo(**{name: value for name in ("out", "n", "steps")
            if (value := getattr(args, name)) is not None})
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphdiff", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    patterns = commands.add_parser("patterns", help="statistics and a picture of a sparse pattern")
    patterns.add_argument("pattern", help="a preset name (diffuser, longformer, bigbird, sparse_transformer) "
                          "or an expression such as 'Window(64) | Global(2) | Random(3, seed=0)'")
    patterns.add_argument("--n", type=int, required=True, help="sequence length")
    patterns.add_argument("--out", default="runs/patterns", help="directory for the PNG and JSON")
    patterns.add_argument("--no-self-loops", action="store_true", help="drop self-loops")
    patterns.set_defaults(func=run_patterns)

    train = commands.add_parser("train", help="train a Diffuser classifier on a task")
    train.add_argument("--task", required=True, help="listops, image, text, pathfinder or multihop")
    train.add_argument("--preset", default="tiny", help="model preset: tiny, small or paper_base")
    train.add_argument("--pattern", help="attention pattern expression (default: the task's or the preset's)")
    train.add_argument("--hops", type=int, help="diffusion hops K")
    train.add_argument("--alpha", type=float, help="PPR teleport probability")
    steps = train.add_mutually_exclusive_group(required=True)
    steps.add_argument("--max-steps", type=int)
    steps.add_argument("--epochs", type=float)
    train.add_argument("--batch-size", type=int, default=32, help="global batch size")
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--weight-decay", type=float, default=0.01)
    train.add_argument("--warmup", type=float, default=0.1, help="warm-up fraction of the steps")
    train.add_argument("--clip", type=float, default=1.0, help="gradient norm clipping (0: off)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--data-dir", help="directory of the task's files (LRA TSVs, IDX files, CIFAR batches, aclImdb)")
    train.add_argument("--task-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="task constructor argument, e.g. length=256 (repeatable)")
    train.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="DiffuserConfig field, e.g. hidden=64 (repeatable)")
    train.add_argument("--eval-every", type=int, help="steps between validations")
    train.add_argument("--log-every", type=int, default=10, help="steps between loss lines in metrics.jsonl")
    train.add_argument("--stop-after", type=int, help="leave after this many steps of this run (then --resume)")
    train.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    train.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    train.add_argument("--out", required=True, help="run directory")
    train.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    train.set_defaults(func=run_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a checkpoint; prints one JSON line")
    evaluate.add_argument("--checkpoint", required=True)
    evaluate.add_argument("--data", help="a data file or directory (for listops: an LRA TSV file)")
    evaluate.add_argument("--split", default="test", choices=("train", "val", "test"))
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument("--truncate", action="store_true",
                          help="cut sequences longer than the model's max_len (labels still refer to the whole)")
    evaluate.set_defaults(func=run_evaluate)

    demo = commands.add_parser("demo", help="the main job on the embedded default (no download)")
    # Defaults: those of graphdiff.demo.run_demo (not imported here: it loads torch).
    demo.add_argument("--out", help="output folder")
    demo.add_argument("--n", type=int, help="sequence length for the pattern statistics")
    demo.add_argument("--steps", type=int, help="training steps of each multihop model")
    demo.set_defaults(func=run_demo)

    # analysis owns its own parser: main() hands everything after `analyze` to it untouched.
    # Registered here too, so that `graphdiff --help` lists it.
    analyze = commands.add_parser("analyze", help="spectral / expansion report of patterns", add_help=False)
    analyze.add_argument("rest", nargs=argparse.REMAINDER)
    analyze.set_defaults(func=run_analyze)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["analyze"]:
        # Not through argparse: since Python 3.11 a REMAINDER positional in a sub-parser no
        # longer swallows option strings (`analyze --out DIR` fails with "unrecognized
        # arguments"), so the sub-command's arguments, --help included, bypass the parser.
        args = argparse.Namespace(command="analyze", rest=argv[1:], func=run_analyze)
    else:
        args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"graphdiff {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
