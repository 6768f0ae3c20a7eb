"""The spectral report: a markdown table over patterns and lengths, and PNG figures.

``report(patterns, lengths, out)`` writes ``out/report.md`` and

* ``lambda2_vs_n.png``: the spectral gap against the length, per pattern (two lengths or more);
* ``receptive_field.png``: the fraction of (query, key) pairs reached against hops;
* ``spectra.png``: each pattern's Laplacian spectrum at the smallest length, and the diffusion
  filter;
* ``attention_spectra.png`` (with learned attention): eigenvalues of each layer's attention
  and of its diffusion in the complex plane.

Every file is written to a temporary name and renamed, so a crash leaves no half-written file.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
from tqdm import tqdm

from analysis.diffusion import AttentionSpectrum, diffusion_spectrum
from analysis.expansion import EXACT_MAX_NODES, field_and_cover, gap_and_epsilon
from analysis.graph import Graph, as_graph
from analysis.spectral import DENSE_MAX_NODES, SpectralConvergenceError, adjacency_lambda
from graphdiff.checks import check_int
from graphdiff.io import atomic_write, atomic_write_text

# name -> pattern expression for graphdiff.patterns.parse_pattern. "window only" is Diffuser's
# own window without its global and random tokens: the ablation the paper argues from.
REPORT_PATTERNS: dict[str, str] = {
    "window only": "BlockWindow(64)",
    "longformer": "longformer",
    "bigbird": "bigbird",
    "diffuser": "diffuser",
    "random only": "Random(64)",
    "sparse_transformer": "sparse_transformer",
}
LENGTHS = (1024, 4096, 16384, 65536)
FIELD_HOPS = 8
ALPHA, HOPS = 0.1, 5  # the paper's diffusion


@dataclass
class Row:
    """One (pattern, length) line of the table; ``None`` where a solver did not converge."""

    pattern: str
    n: int
    edges_per_token: float
    lambda_2: Optional[float]
    epsilon: Optional[float]
    ramanujan_ratio: Optional[float]
    hops_to_cover: Optional[int]
    connected: bool
    field: np.ndarray = field(repr=False)  # receptive field for 0..FIELD_HOPS hops


@dataclass
class Report:
    rows: list[Row]
    markdown: str
    files: list[str]


def report(
    patterns: Union[Sequence[str], Mapping[str, Any], None] = None,
    lengths: Sequence[int] = LENGTHS,
    out: Optional[str] = None,
    attention: Optional[Sequence[AttentionSpectrum]] = None,
) -> Report:
    """Compute the table (and, with ``out``, write ``report.md`` and the figures).

    Args:
        patterns: names from ``REPORT_PATTERNS``, pattern expressions, or a mapping name -> pattern
            (expression or object with ``to_scipy``); a single name, expression or pattern
            object is one pattern. Default: all of ``REPORT_PATTERNS``.
        lengths: sequence lengths.
        out: directory to write into (created); ``None`` computes the table only.
        attention: per-layer spectra of a learned attention (see :func:`attention_spectrum`).

    Returns:
        the rows, the markdown text and the files written.

    Raises:
        ValueError: on a bad pattern or length, or an ``out`` that exists and is not a directory
            (before any eigensolve).
    """
    if out is not None and os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"out={out!r} exists and is not a directory")
    named = _resolve(patterns)
    lengths = sorted({check_int("lengths", n, 2) for n in lengths})
    if not lengths:
        raise ValueError("lengths must hold at least one integer >= 2")
    spectrum_n = min(lengths[0], DENSE_MAX_NODES)  # spectra.png: whole (dense) spectra
    rows: list[Row] = []
    spectra: dict[str, np.ndarray] = {}
    # disable=None: a progress bar on a terminal, silence in notebooks, logs and tests
    with tqdm(
        total=len(named) * len(lengths), desc="spectral report", unit="graph", disable=None
    ) as bar:
        for name, pattern in named.items():
            for n in lengths:
                bar.set_postfix_str(f"{name} n={n}")
                g = as_graph(pattern, n)
                rows.append(_row(name, g))
                if out is not None and n == spectrum_n:
                    spectra[name] = g.laplacian_spectrum  # cached: _row's own solve when connected
                bar.update()
    markdown = _markdown(rows, attention)
    files: list[str] = []
    if out is not None:
        for name, pattern in named.items():
            if name not in spectra:  # every length is above the dense limit: one more graph
                spectra[name] = as_graph(pattern, spectrum_n).laplacian_spectrum
        files.append(os.path.join(out, "report.md"))
        atomic_write_text(files[-1], markdown)
        files += _figures(rows, spectra, spectrum_n, attention, out)
    return Report(rows, markdown, files)


def _resolve(patterns: Union[Sequence[str], Mapping[str, Any], None]) -> dict[str, Any]:
    from graphdiff.patterns import parse_pattern

    if patterns is None:
        patterns = list(REPORT_PATTERNS)
    if isinstance(patterns, str) or hasattr(patterns, "to_scipy"):
        patterns = [patterns]  # one pattern, not a sequence of characters (or of anything else)
    if isinstance(patterns, Mapping):
        items = list(patterns.items())
    else:
        items = [
            (p, REPORT_PATTERNS.get(p, p)) if isinstance(p, str) else (repr(p), p) for p in patterns
        ]
    if not items:
        raise ValueError("patterns must name at least one pattern")
    return {name: parse_pattern(p) if isinstance(p, str) else p for name, p in items}


def _row(name: str, g: Graph) -> Row:
    # A disconnected graph is flagged in the table (gap_and_epsilon does not warn about it).
    lam2: Optional[float]
    epsilon: Optional[float]
    try:
        lam2, epsilon = gap_and_epsilon(g)
    except SpectralConvergenceError as error:
        warnings.warn(f"{name} at n={g.n}: {error}", stacklevel=3)
        lam2 = epsilon = None
    try:
        ratio: Optional[float] = adjacency_lambda(g).ramanujan_ratio
    except SpectralConvergenceError as error:
        warnings.warn(f"{name} at n={g.n}: {error}", stacklevel=3)
        ratio = None
    field, covered = field_and_cover(g, FIELD_HOPS)
    return Row(
        pattern=name,
        n=g.n,
        edges_per_token=g.num_edges / g.n,
        lambda_2=lam2,
        epsilon=epsilon,
        ramanujan_ratio=ratio,
        hops_to_cover=covered,
        connected=g.num_components == 1,
        field=field,
    )


def _cell(text: str) -> str:
    """``text`` as a markdown table cell: a ``|`` (pattern union) would end the cell."""
    return text.replace("|", "\\|")


def _fmt(value: Optional[float], digits: int = 4) -> str:
    if value is None:
        return "n/c"  # not converged
    if abs(value) < 1e-12:  # rounding noise around an exact 0 (e.g. epsilon of full attention)
        return "0"
    return f"{value:.{digits}g}"


def _markdown(rows: list[Row], attention: Optional[Sequence[AttentionSpectrum]]) -> str:
    lines = [
        "# Spectral report",
        "",
        "Normalised Laplacian `L = I - D^-1/2 W D^-1/2` of the symmetrised pattern graph `W`. "
        "`lambda_2`: spectral gap (larger mixes faster; 0 = disconnected). `epsilon`: "
        "`(lambda_max - lambda_2) / (lambda_max + lambda_2)`, 0 for full attention. Ramanujan "
        "ratio: `max(|mu_2|, |mu_n|) / (2 sqrt(d - 1))` of the adjacency, <= 1 for a Ramanujan "
        "graph (hubs push it up). Hops to cover: diffusion hops until every query has heard "
        "every key (sampled queries above "
        f"{EXACT_MAX_NODES} tokens, a lower bound). `n/c`: the eigensolver did not converge.",
        "",
        "| pattern | n | edges / token | lambda_2 | epsilon | Ramanujan ratio | hops to cover |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        hops = "never" if r.hops_to_cover is None else str(r.hops_to_cover)
        gap = _fmt(r.lambda_2) + ("" if r.connected else " (disconnected)")
        lines.append(
            f"| {_cell(r.pattern)} | {r.n} | {r.edges_per_token:.1f} | {gap} | {_fmt(r.epsilon)} | "
            f"{_fmt(r.ramanujan_ratio, 3)} | {hops} |"
        )
    lines.append("")
    if len({r.n for r in rows}) > 1:
        lines += ["![lambda_2 against n](lambda2_vs_n.png)", ""]
    else:
        lines += [
            "One length only: no figure of lambda_2 against n (give two lengths or more).",
            "",
        ]
    lines += [
        "![receptive field against hops](receptive_field.png)",
        "",
        "![spectra](spectra.png)",
        "",
    ]
    if attention:
        lines += [
            "## Learned attention",
            "",
            f"Leading eigenvalues of each layer's one-hop attention `A` (row-stochastic, so "
            f"`mu_1 = 1`) and of its diffusion `T = f(A)` ({attention[0].diffusion}); worst head. "
            "`abs(nu_2)`: the second-largest eigenvalue modulus of `T` over all `n` eigenvalues "
            "`f(mu)` of `T`, one copy of the Perron eigenvalue `f(1) = 1` left out (not "
            "`abs(f(mu_2))`: `f` does not keep the order by modulus, `mu` near 0 maps to about "
            "`f(0)`). Where only the `k` leading `mu` were computed (above "
            f"{DENSE_MAX_NODES} tokens), `[low, high]`: `low` from the computed ones, `high` "
            "also bounds the others, `abs(f(mu)) <= f(abs(mu_k))`; both up to the eigensolver's "
            "accuracy (about 1e-5 there).",
            "",
            "| layer | heads | abs(mu_2) of A | abs(nu_2) of diffusion T |",
            "|---:|---:|---:|---:|",
        ]
        for layer, spectrum in enumerate(attention):
            second = np.abs(spectrum.eigs[:, 1]).max() if spectrum.eigs.shape[1] > 1 else math.nan
            lines.append(
                f"| {layer} | {spectrum.eigs.shape[0]} | {second:.4f} "
                f"| {_bounds(spectrum.second)} |"
            )
        lines += ["", "![attention spectra](attention_spectra.png)", ""]
    return "\n".join(lines)


def _bounds(second: np.ndarray) -> str:
    """The worst head's ``abs(nu_2)`` from per-head ``(low, high)`` bounds ``[H, 2]``."""
    low, high = second.max(axis=0)
    return f"{low:.4f}" if f"{low:.4f}" == f"{high:.4f}" else f"[{low:.4f}, {high:.4f}]"


# One look per pattern: colour, marker and line style all differ, so that lines stay apart in
# grey scale and where they overlap.
_COLORS = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINES = ("-", "--", "-.", ":")


def _style(index: int) -> dict[str, Any]:
    return {
        "color": _COLORS[index % len(_COLORS)],
        "marker": _MARKERS[index % len(_MARKERS)],
        "linestyle": _LINES[index % len(_LINES)],
    }


def _figures(
    rows: list[Row],
    spectra: Mapping[str, np.ndarray],
    spectrum_n: int,
    attention: Optional[Sequence[AttentionSpectrum]],
    out: str,
) -> list[str]:
    """Write the figures; ``spectra``: each pattern's whole Laplacian spectrum at ``spectrum_n``.

    ``lambda2_vs_n.png`` needs two lengths at least: with one it would be a dot per pattern, so
    it is not drawn (the report says so).
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    names = list(spectra)
    files = []
    if len({r.n for r in rows}) > 1:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for index, name in enumerate(names):
            mine = [r for r in rows if r.pattern == name and r.lambda_2]
            ax.loglog(
                [r.n for r in mine],
                [r.lambda_2 for r in mine],
                label=name,
                markersize=6,
                **_style(index),
            )
        ax.set(
            xlabel="sequence length n (tokens)",
            ylabel="spectral gap $\\lambda_2$ of L (log scale)",
            title="Spectral gap against length (larger mixes faster)",
        )
        ax.legend(fontsize=8, title="pattern (disconnected ones omitted)", title_fontsize=8)
        lengths = sorted({r.n for r in rows})
        ax.set_xticks(lengths, [f"{n:,}" for n in lengths])
        ax.minorticks_off()  # no unlabelled log ticks between the lengths
        ax.grid(True, which="major", alpha=0.3)
        files.append(_save(fig, os.path.join(out, "lambda2_vs_n.png")))

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    largest = max(r.n for r in rows)
    mine = [r for r in rows if r.n == largest]
    # Lines that coincide (several patterns reach everything in two hops) are drawn side by side:
    # each pattern's points are shifted by a small fraction of a hop.
    shift = 0.4 / max(1, len(mine))
    for index, r in enumerate(mine):
        hops = np.arange(FIELD_HOPS + 1) + (index - (len(mine) - 1) / 2) * shift
        ax.plot(hops, r.field, label=r.pattern, markersize=6, **_style(index))
    ax.set(
        xlabel="diffusion hops k (points of coinciding lines drawn side by side)",
        ylabel="fraction of (query, key) pairs joined",
        ylim=(-0.02, 1.04),
        title=f"Receptive field: pairs joined by a path of at most k edges (n={largest})",
    )
    ax.set_xticks(range(FIELD_HOPS + 1))
    ax.legend(fontsize=8, title="pattern", title_fontsize=8)
    ax.grid(True, alpha=0.3)
    files.append(_save(fig, os.path.join(out, "receptive_field.png")))

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.5 * len(names) + 3.5))
    for index, name in enumerate(names):
        spectrum = np.sort(spectra[name])
        color = _style(index)["color"]
        left.plot(
            spectrum, np.full_like(spectrum, index), "|", color=color, markersize=16, alpha=0.25
        )
        if spectrum.size > 1:
            left.plot(spectrum[1], index + 0.32, "^", color="black", markersize=7)
    left.plot([], [], "|", color="grey", markersize=12, label="one eigenvalue (overlaps darken)")
    left.plot([], [], "^", color="black", label="$\\lambda_2$, the spectral gap")
    left.set_yticks(range(len(names)), names)
    left.set_ylim(len(names) - 0.4, -0.6)
    left.set(
        xlim=(-0.05, 2.05),
        xlabel="eigenvalue $\\lambda$ of the normalised Laplacian $L = I - D^{-1/2} W D^{-1/2}$",
        title=f"Pattern spectra (n={spectrum_n}): a good expander has them all near 1",
    )
    left.legend(fontsize=8, loc="lower right")
    mu = np.linspace(-1, 1, 401)
    right.plot(
        mu,
        diffusion_spectrum(mu, ALPHA, HOPS),
        "-",
        color="tab:blue",
        label=f"PPR diffusion, K={HOPS} hops",
    )
    right.plot(
        mu,
        diffusion_spectrum(mu, ALPHA, None),
        "--",
        color="tab:orange",
        label="PPR diffusion, K -> infinity",
    )
    right.plot(mu, mu, ":", color="grey", label="no diffusion (one hop: mu itself)")
    right.set(
        xlabel="eigenvalue mu of the one-hop attention A",
        ylabel="eigenvalue of the diffusion of A",
        title=f"Diffusion as a low-pass filter (alpha={ALPHA})",
    )
    right.legend(fontsize=8, title="PPR: personalised PageRank", title_fontsize=8)
    right.grid(True, alpha=0.3)
    files.append(_save(fig, os.path.join(out, "spectra.png")))

    if attention:
        cols = len(attention)
        fig, axes = plt.subplots(1, cols, figsize=(3.6 * cols, 4.0), squeeze=False)
        circle = np.exp(1j * np.linspace(0, 2 * np.pi, 200))
        for layer, (ax, spectrum) in enumerate(zip(axes[0], attention)):
            ax.plot(circle.real, circle.imag, color="lightgrey", label="unit circle")
            # Hollow circles around small crosses: both stay visible where they coincide.
            ax.scatter(
                spectrum.eigs.real,
                spectrum.eigs.imag,
                s=60,
                facecolors="none",
                edgecolors="tab:blue",
                label="A: one-hop attention",
            )
            ax.scatter(
                spectrum.diffused.real,
                spectrum.diffused.imag,
                s=16,
                marker="x",
                color="tab:red",
                label="T: its diffusion",
            )
            ax.set(
                title=f"layer {layer}",
                aspect="equal",
                xlim=(-1.1, 1.1),
                ylim=(-1.1, 1.1),
                xlabel="real part",
                ylabel="imaginary part",
            )
        axes[0][0].legend(fontsize=7, loc="lower left")
        diffusion = attention[0].diffusion
        note = " (PPR: personalised PageRank)" if diffusion.startswith("PPR") else ""
        fig.suptitle(
            f"Leading eigenvalues of the learned attention, every head\n"
            f"diffusion T: {diffusion}{note}",
            fontsize=10,
        )
        files.append(_save(fig, os.path.join(out, "attention_spectra.png")))
    return files


def _save(fig: Any, path: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)
    return path
