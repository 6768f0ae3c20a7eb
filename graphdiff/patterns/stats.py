"""What a user looks at first about a pattern: sizes, degrees, symmetry, global tokens, a
picture."""

from __future__ import annotations

import dataclasses
import json
import os

import torch
from torch import Tensor

from graphdiff.checks import check_int
from graphdiff.io import atomic_write


@dataclasses.dataclass(frozen=True)
class PatternStats:
    tokens: int
    edges: int
    edges_per_token: float
    min_in_degree: int
    mean_in_degree: float
    max_in_degree: int
    symmetric: bool
    global_tokens: int  # tokens that attend every other token and are attended by every other token

    def to_markdown(self) -> str:
        rows = [
            (field.name.replace("_", " "), getattr(self, field.name))
            for field in dataclasses.fields(self)
        ]
        lines = ["| statistic | value |", "|---|---|"]
        lines += [
            f"| {name} | {value:.2f} |" if isinstance(value, float) else f"| {name} | {value} |"
            for name, value in rows
        ]
        return "\n".join(lines)


def pattern_stats(edge_index: Tensor, n: int) -> PatternStats:
    """Statistics of a canonical edge_index (sorted, no duplicates) on ``n`` tokens.

    Degrees count self-loops; whether a token is global does not depend on them.
    """
    n = check_int("n", n, low=1)
    src, dst = edge_index
    in_degree = torch.bincount(dst, minlength=n)
    others = src != dst
    attends_all = torch.bincount(dst[others], minlength=n) == n - 1
    attended_by_all = torch.bincount(src[others], minlength=n) == n - 1
    reverse = torch.sort(src * n + dst).values  # the keys of the reversed edges, sorted
    return PatternStats(
        tokens=n,
        edges=edge_index.size(1),
        edges_per_token=edge_index.size(1) / n,
        min_in_degree=int(in_degree.min()),
        mean_in_degree=float(in_degree.float().mean()),
        max_in_degree=int(in_degree.max()),
        symmetric=bool(torch.equal(reverse, dst * n + src)),
        global_tokens=int((attends_all & attended_by_all).sum()),
    )


def plot_adjacency(
    edge_index: Tensor, n: int, path: str, title: str = "", max_pixels: int = 512
) -> None:
    """Save a PNG of the attention mask (rows = queries, columns = keys).

    Above ``max_pixels`` tokens the picture is downsampled: each pixel shows the fraction of
    token pairs in its cell that are edges, so a long pattern still shows its shape.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = min(n, max_pixels)
    cell_of = torch.arange(n) * cells // n  # token -> picture cell
    src, dst = edge_index
    counts = torch.bincount(cell_of[dst] * cells + cell_of[src], minlength=cells * cells).double()
    tokens_per_cell = torch.bincount(cell_of, minlength=cells).double()
    density = counts.view(cells, cells) / torch.outer(tokens_per_cell, tokens_per_cell)

    fig, ax = plt.subplots(figsize=(7 if cells < n else 6, 6))
    # A power norm keeps sparse random edges (a few percent of a cell) visible next to dense blocks.
    norm = matplotlib.colors.PowerNorm(gamma=0.3, vmin=0.0, vmax=1.0)
    image = ax.imshow(
        density.numpy(), cmap="Greys", norm=norm, extent=(0, n, n, 0), interpolation="nearest"
    )
    if cells < n:  # downsampled: a pixel's grey level is its share of edges
        fig.colorbar(
            image, ax=ax, shrink=0.8, label="share of the pixel's (query, key) pairs that are edges"
        )
    ax.set_xlabel("key j (the attended token); black: i attends j")
    ax.set_ylabel("query i (the attending token)")
    ax.set_title(title or f"attention pattern, n={n}")
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=100))
    plt.close(fig)


def save_pattern_report(pattern, n: int, out: str, self_loops: bool = True) -> PatternStats:
    """Print a pattern's statistics and write ``out/pattern_{n}.png`` and
    ``out/pattern_{n}.json``."""
    edge_index = pattern(n, self_loops=self_loops)
    stats = pattern_stats(edge_index, n)
    print(f"pattern: {pattern!r}, n={n}\n{stats.to_markdown()}")
    plot_adjacency(
        edge_index, n, os.path.join(out, f"pattern_{n}.png"), title=f"{pattern!r}\nn={n}"
    )
    record = {"pattern": repr(pattern), **dataclasses.asdict(stats)}
    atomic_write(
        os.path.join(out, f"pattern_{n}.json"),
        lambda handle: json.dump(record, handle, indent=2),
        text=True,
    )
    print(f"picture: {os.path.join(out, f'pattern_{n}.png')}")
    return stats
