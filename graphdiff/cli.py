"""The ``graphdiff`` command: one sub-command per use of the library.

    graphdiff patterns diffuser --n 4096 --out runs/patterns
    graphdiff analyze --out runs/analysis
    graphdiff train --task multihop --preset tiny --max-steps 600 --out runs/multihop
    graphdiff evaluate --checkpoint runs/multihop/best.pt
    graphdiff demo --out runs/demo

Errors: each sub-command first checks its arguments, configuration and data; a ``ValueError``,
``TypeError`` or ``FileNotFoundError`` raised by those checks is one line,
``graphdiff <command>: error: ...``, and exit status 2. An exception raised after them, while
training or evaluating, is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import json
import sys
from typing import Any, Dict, Iterator, List, Optional

from graphdiff.cli_types import positive_float, positive_int, positive_int_or_all


class CommandError(Exception):
    """Bad arguments, configuration or data, found before the work starts: one line, exit 2."""


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """The library's checks raise ``ValueError``, ``TypeError`` or ``FileNotFoundError``:
    inside this block (the set-up of a command) they become a :class:`CommandError`."""
    try:
        yield
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise CommandError(str(error)) from error


def run_patterns(args: argparse.Namespace) -> int:
    from graphdiff.patterns import parse_pattern
    from graphdiff.patterns.stats import save_pattern_report

    self_loops = not args.no_self_loops
    with user_errors():
        pattern = parse_pattern(args.pattern)
        pattern(args.n, self_loops=self_loops)  # checks n against the pattern (then cached)
    save_pattern_report(pattern, args.n, args.out, self_loops=self_loops)
    return 0


def run_analyze(args: argparse.Namespace) -> int:
    from analysis.cli import main as analyze

    return analyze(args.rest)  # analysis reports its own errors


def key_values(items: List[str]) -> Dict[str, Any]:
    """``["length=256", "seed=1"]`` -> ``{"length": 256, "seed": 1}`` (values are Python
    literals; anything else stays a string)."""
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
    from graphdiff.train import TrainArgs, build_run, check_run, fit
    from graphdiff.train.distributed import init_distributed, shutdown

    with user_errors():
        if args.init is not None and hasattr(args, "preset"):
            raise ValueError(
                "--preset does not apply with --init: the pretrained encoder fixes the "
                "architecture (--pattern, --hops, --alpha and --model-arg still apply)"
            )
        train_args = TrainArgs(
            # Every TrainArgs field is an option of the same name, but for these two.
            **{
                field.name: getattr(args, field.name)
                for field in dataclasses.fields(TrainArgs)
                if hasattr(args, field.name) and field.name not in ("task_args", "model_args")
            },
            task_args=key_values(args.task_arg),
            model_args=key_values(args.model_arg),
        )
        context = init_distributed(train_args.device)
    try:
        with user_errors():
            plan = check_run(train_args, context)
        run = build_run(plan)
        result = fit(run)
    finally:
        shutdown(context)
    if context.is_main:
        if result.already_finished:
            print(
                f"graphdiff train: the run in {train_args.out} had already finished its "
                f"{run.total} steps; its final result:",
                file=sys.stderr,
            )
        if result.metrics:
            print(json.dumps(result.metrics))
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from graphdiff.train import evaluate
    from graphdiff.train.evaluation import load_evaluation

    with user_errors():
        model, dataset, task = load_evaluation(
            args.checkpoint, args.data, args.split, args.truncate
        )
    metrics = evaluate(
        model, dataset, args.batch_size, next(model.parameters()).device, truncate=args.truncate
    )
    print(json.dumps({"checkpoint": args.checkpoint, "task": task, "split": args.split, **metrics}))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from graphdiff.demo import run_demo as demo

    # Unset options keep run_demo's own defaults, written in one place.
    demo(
        **{
            name: value
            for name in ("out", "n", "steps")
            if (value := getattr(args, name)) is not None
        }
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphdiff", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    patterns = commands.add_parser("patterns", help="statistics and a picture of a sparse pattern")
    patterns.add_argument(
        "pattern",
        help="a preset name (diffuser, longformer, bigbird, "
        "sparse_transformer) or an expression such as "
        "'Window(64) | Global(2) | Random(3, seed=0)'",
    )
    patterns.add_argument("--n", type=positive_int, required=True, help="sequence length")
    patterns.add_argument("--out", default="runs/patterns", help="directory for the PNG and JSON")
    patterns.add_argument("--no-self-loops", action="store_true", help="drop self-loops")
    patterns.set_defaults(func=run_patterns)

    train = commands.add_parser(
        "train",
        help="train a Diffuser model on a task",
        description="Train a Diffuser model on a task: a classifier, a two-tower retrieval "
        "model or a masked language model, as the task asks. OUT receives config.json, "
        "metrics.jsonl, last.pt and best.pt; an OUT that holds a run is refused unless "
        "--resume continues it or --overwrite replaces it.",
    )
    train.add_argument(
        "--task",
        required=True,
        help="listops, image, text, pathfinder, retrieval, mlm or multihop (see docs/tasks.md)",
    )
    train.add_argument(
        "--preset",
        default=argparse.SUPPRESS,  # unset: tiny, or the --init encoder's architecture
        help="model preset: tiny (the default), small or paper_base; not with --init, whose "
        "encoder fixes the architecture",
    )
    train.add_argument(
        "--init",
        metavar="PATH",
        help="start from a pretrained encoder under a fresh task head: a checkpoint "
        "(OUT/best.pt of any task), a run folder (its best.pt) or a save_pretrained "
        "directory. Its architecture replaces the preset's (a --model-arg that changes it is "
        "refused); the task sets max_len (learned positions grow by copying) and the "
        "classes; --pattern, --hops, --alpha and the other --model-args apply as usual. "
        "With --resume the run continues from its last.pt and PATH is not read",
    )
    train.add_argument(
        "--pattern",
        help="attention pattern expression (default: the task's, else the preset's or the "
        "--init encoder's)",
    )
    train.add_argument("--hops", type=positive_int, help="diffusion hops K")
    train.add_argument("--alpha", type=float, help="PPR teleport probability")
    steps = train.add_mutually_exclusive_group(required=True)
    steps.add_argument("--max-steps", type=positive_int, help="the run's optimiser steps")
    steps.add_argument(
        "--epochs", type=positive_float, help="the run's length in epochs (may be fractional)"
    )
    train.add_argument(
        "--batch-size",
        type=positive_int,
        default=32,
        help="global batch size, divided evenly among the processes",
    )
    train.add_argument("--lr", type=positive_float, default=1e-3)
    train.add_argument("--weight-decay", type=float, default=0.01)
    train.add_argument(
        "--warmup",
        type=float,
        default=0.1,
        help="warm-up fraction of the steps; then linear decay to 0",
    )
    train.add_argument("--clip", type=float, default=1.0, help="gradient norm clipping (0: off)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--data-dir",
        help="directory of the task's files (LRA TSVs, IDX files, CIFAR batches, aclImdb, "
        "a folder of UTF-8 text for mlm)",
    )
    train.add_argument(
        "--task-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="task constructor argument, e.g. length=256 (repeatable)",
    )
    train.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="DiffuserConfig field, e.g. hidden=64 (repeatable; wins over "
        "--pattern, --hops and --alpha)",
    )
    train.add_argument(
        "--eval-every",
        type=positive_int,
        help="steps between validations (default: every epoch or every fifth "
        "of the run, whichever comes sooner; always at the last step)",
    )
    # Unset: TrainArgs's default (not imported here: it loads torch), which the help repeats.
    train.add_argument(
        "--eval-examples",
        type=positive_int_or_all,
        default=argparse.SUPPRESS,
        metavar="N",
        help="validation examples per evaluation: the split's first N, or 'all' (default: 160)",
    )
    train.add_argument(
        "--log-every",
        type=positive_int,
        default=10,
        help="steps between loss lines in metrics.jsonl",
    )
    train.add_argument(
        "--stop-after",
        type=positive_int,
        help="leave after this many steps of this run (then --resume)",
    )
    train.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    train.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    train.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16"),
        help="bf16: the training forward pass under bfloat16 autocast (the sparse kernels "
        "compute in float32 inside; evaluation stays fp32)",
    )
    train.add_argument(
        "--grad-checkpoint",
        action="store_true",
        help="recompute each layer in the backward pass: the activation memory of one layer "
        "instead of all, the same gradients, about one more forward pass of time",
    )
    train.add_argument("--out", required=True, help="run directory")
    existing = train.add_mutually_exclusive_group()
    existing.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in OUT from last.pt, with the same arguments "
        "(others are refused; --data-dir, --eval-every, --eval-examples, --log-every, "
        "--workers, --device and --grad-checkpoint may change). A finished run is not "
        "extended, since its "
        "learning rate has decayed to 0: it prints its final result, and "
        "more steps are refused",
    )
    existing.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in OUT (its config, metrics and checkpoints)",
    )
    train.set_defaults(func=run_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a checkpoint; prints one JSON line")
    evaluate.add_argument(
        "--checkpoint",
        required=True,
        help="a checkpoint file: OUT/best.pt or OUT/last.pt of a training run",
    )
    evaluate.add_argument(
        "--data",
        help="a data file or directory: for listops also one LRA TSV file; for mlm a folder of "
        "text, every document scored; for retrieval LRA's AAN files, or text for matching",
    )
    evaluate.add_argument("--split", default="test", choices=("train", "val", "test"))
    evaluate.add_argument("--batch-size", type=positive_int, default=32)
    evaluate.add_argument(
        "--truncate",
        action="store_true",
        help="cut sequences longer than the model's max_len (labels still refer to the whole)",
    )
    evaluate.set_defaults(func=run_evaluate)

    demo = commands.add_parser("demo", help="the main job on the embedded default (no download)")
    # Defaults: those of graphdiff.demo.run_demo (not imported here: it loads torch).
    demo.add_argument("--out", help="output folder")
    demo.add_argument("--n", type=positive_int, help="sequence length for the pattern statistics")
    demo.add_argument("--steps", type=positive_int, help="training steps of each multihop model")
    demo.set_defaults(func=run_demo)

    # analysis owns its own parser: main() hands everything after `analyze` to it untouched.
    # Registered here too, so that `graphdiff --help` lists it.
    analyze = commands.add_parser(
        "analyze", help="spectral / expansion report of patterns", add_help=False
    )
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
    except CommandError as error:
        print(f"graphdiff {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
