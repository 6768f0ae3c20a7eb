"""The ``graphdiff`` command: one sub-command per use of the library.

    graphdiff patterns diffuser --n 4096 --out runs/patterns
    graphdiff analyze --out runs/analysis
    graphdiff train --task multihop --preset tiny --out runs/multihop
    graphdiff evaluate --checkpoint runs/multihop/best.pt
    graphdiff demo --out runs/demo
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional


def run_patterns(args: argparse.Namespace) -> int:
    from graphdiff.patterns import parse_pattern, pattern_stats
    from graphdiff.patterns.stats import plot_adjacency

    pattern = parse_pattern(args.pattern)
    edge_index = pattern(args.n, self_loops=not args.no_self_loops)
    stats = pattern_stats(edge_index, args.n)
    print(f"pattern: {pattern!r}")
    print(stats.to_markdown())
    os.makedirs(args.out, exist_ok=True)
    picture = os.path.join(args.out, f"pattern_{args.n}.png")
    plot_adjacency(edge_index, args.n, picture, title=f"{pattern!r}\nn={args.n}")
    with open(os.path.join(args.out, f"pattern_{args.n}.json"), "w") as handle:
        json.dump({"pattern": repr(pattern), **stats.__dict__}, handle, indent=2)
    print(f"picture: {picture}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default: everything lands under ``--out``."""
    pattern_args = argparse.Namespace(pattern="diffuser", n=args.n, out=args.out, no_self_loops=False)
    return run_patterns(pattern_args)


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

    demo = commands.add_parser("demo", help="the main job on the embedded default (no download)")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--n", type=int, default=4096, help="sequence length for the pattern statistics")
    demo.set_defaults(func=run_demo)

    # analysis owns its own parser: everything after `analyze` is passed through.
    analyze = commands.add_parser("analyze", help="spectral / expansion report of patterns", add_help=False)
    analyze.add_argument("rest", nargs=argparse.REMAINDER)
    analyze.set_defaults(func=lambda args: __import__("analysis.cli").cli.main(args.rest))
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"graphdiff {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
