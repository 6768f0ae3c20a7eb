"""``graphdiff analyze``: the spectral report from the command line.

    graphdiff analyze --out reports/spectral
    graphdiff analyze --patterns diffuser "Window(64) | Global(2)" --n 1024 4096 --out DIR
    graphdiff analyze --checkpoint runs/x/checkpoint.pt --out DIR

``graphdiff.cli`` dispatches ``graphdiff analyze ARGS...`` to :func:`main`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from analysis.diffusion import AttentionSpectrum, attention_spectrum
from analysis.reporting import LENGTHS, REPORT_PATTERNS, report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphdiff analyze",
        description="Spectral gap, expansion and receptive field of sparse attention patterns: "
        "writes report.md and PNG figures.",
    )
    parser.add_argument(
        "--patterns",
        nargs="+",
        default=list(REPORT_PATTERNS),
        metavar="PATTERN",
        help=f"preset names ({', '.join(repr(p) for p in REPORT_PATTERNS)}) or pattern expressions "
        "such as 'Window(64) | Global(2)' (default: all presets)",
    )
    parser.add_argument(
        "--n",
        nargs="+",
        type=int,
        default=list(LENGTHS),
        metavar="N",
        help=f"sequence lengths (default: {' '.join(map(str, LENGTHS))})",
    )
    parser.add_argument(
        "--checkpoint", help="a trained model: also analyse its learned attention per layer"
    )
    parser.add_argument(
        "--checkpoint-n",
        type=int,
        default=1024,
        metavar="N",
        help="sequence length fed to the checkpoint's model (default 1024, capped at its max_len)",
    )
    parser.add_argument(
        "--k", type=int, default=8, help="eigenvalues per head of the learned attention (default 8)"
    )
    parser.add_argument("--out", required=True, help="output directory")
    return parser


def learned_attention(path: str, n: int, k: int) -> list[AttentionSpectrum]:
    """Per-layer spectra of a checkpoint's one-hop attention on one random sequence.

    Imported lazily: analysis depends on graphdiff.patterns only, the model is needed here alone.
    """
    import torch

    from graphdiff.train.checkpoint import load_model

    model, config = load_model(path)
    model.eval()
    n = min(n, config.max_len)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, config.vocab_size, (1, n), generator=generator)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    with torch.no_grad():
        _, (edge_index, attentions) = model(tokens, mask, return_attention_weights=True)
    return [
        attention_spectrum(
            attn,
            edge_index,
            n,
            k=min(k, n),
            alpha=config.alpha,
            hops=config.hops,
            kernel=config.kernel,
            t=config.t,
        )
        for attn in attentions
    ]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        attention = (
            learned_attention(args.checkpoint, args.checkpoint_n, args.k)
            if args.checkpoint
            else None
        )
        result = report(args.patterns, args.n, args.out, attention=attention)
    except (ValueError, OSError) as error:  # bad pattern, length, checkpoint or --out: one line
        print(f"graphdiff analyze: error: {error}", file=sys.stderr)
        return 2
    # The report without its figure links and blank lines: the figures' names follow.
    print(
        "\n".join(
            line
            for line in result.markdown.splitlines()
            if line.strip() and not line.startswith("![")
        )
    )
    print("wrote " + ", ".join(result.files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
