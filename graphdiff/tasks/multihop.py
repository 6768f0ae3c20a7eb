"""MultiHop: a synthetic task whose answer lies beyond the reach of one hop per layer.

Meant for a window-only pattern ``Window(window)`` (token i attends j when
``|i - j| <= window // 2``; no global or random edges) and a model that reads its answer at the
CLS token (``pooling="cls"``), with ``layers`` layers of ``hops``-hop diffusion.

Sequence (``length`` tokens, CLS included; position = index in the sequence)::

    position   0     1 .. d-1    d          d+1 .. length-1
    token      CLS   fillers     KEY(v)     fillers

- ``d``, the distance from the read position, is uniform in ``min_distance..max_distance``.
- fillers are uniform over ``num_fillers`` filler tokens, independent of everything else.
- ``v`` is uniform in ``0..num_values - 1``; the label is ``v``.

Vocabulary: ``0`` PAD, ``1`` CLS, ``2 .. 1 + num_fillers`` fillers, then ``num_values`` key
tokens, KEY(v) = ``2 + num_fillers + v``; ``vocab_size = 2 + num_fillers + num_values``.

Why one hop per layer cannot solve it: with radius ``r = window // 2``, one attention hop moves
information at most ``r`` positions, so after ``layers`` one-hop layers the CLS output depends
only on positions ``0 .. layers * r`` (the one-hop reach). The default ``min_distance`` is
``layers * r + 1``, so those positions hold CLS and fillers only, which are independent of the
label: any such model is at chance (``1 / num_values``). Diffusion with ``hops`` hops per layer
reaches ``hops * layers * r`` positions; ``max_distance`` may not exceed that. The defaults put
the key at ``layers * r + 1 .. 2 * layers * r``: a path to it takes ``ceil(d / r)`` hops, between
``layers + 1`` and ``2 * layers`` in all, while diffusion offers ``hops * layers``.

Defaults (``length=128, window=8, layers=2, hops=5``): r = 4, one-hop reach 8, diffusion reach
40, key at distance 9..16; 10 classes, 8 fillers, vocab_size 20.

Mean pooling defeats the construction (the key's own embedding enters the mean): use CLS pooling.
A pattern with global tokens at position 0 (``diffuser()``, ``longformer()``) also reaches the
key in one hop.
"""

from __future__ import annotations

import numpy as np

from graphdiff.checks import check_int
from graphdiff.patterns import Window
from graphdiff.tasks.base import (
    NUM_SPECIAL,
    TaskDataset,
    check_length,
    example_rng,
)

__all__ = ["MultiHop"]

DEFAULT_SPLIT_SIZES = {"train": 10_000, "val": 1_000, "test": 1_000}


class MultiHop(TaskDataset):
    """The MultiHop task (see the module docstring for the construction and the hop argument).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (distinct random streams).
        num_samples: examples in the split; default 10000 / 1000 / 1000.
        seed: base seed; same arguments give the same examples.
        length: sequence length, CLS included.
        window, layers, hops: the pattern window and the model depth and hops the task targets.
        num_values: number of key values, i.e. classes.
        num_fillers: number of filler tokens.
        min_distance, max_distance: range of the key's distance from CLS; default
            ``layers * (window // 2) + 1`` and ``min(2 * layers * (window // 2), length - 1)``.
        max_len: longest sequence, CLS included; default ``length``.
        truncate: allow ``max_len < length`` and cut sequences (the key must stay inside).

    Attributes:
        pattern: ``Window(window)``, the pattern the task is built for.
        one_hop_reach: ``layers * (window // 2)``, the farthest position one hop per layer reads.
        diffusion_reach: ``hops * one_hop_reach``.
    """

    def __init__(
        self,
        split: str = "train",
        num_samples: int | None = None,
        seed: int = 0,
        length: int = 128,
        window: int = 8,
        layers: int = 2,
        hops: int = 5,
        num_values: int = 10,
        num_fillers: int = 8,
        min_distance: int | None = None,
        max_distance: int | None = None,
        max_len: int | None = None,
        truncate: bool = False,
    ) -> None:
        self.length = check_int("length", length, 2)
        super().__init__(split, length if max_len is None else max_len, truncate)
        self.num_samples = check_int(
            "num_samples", DEFAULT_SPLIT_SIZES[split] if num_samples is None else num_samples, 0
        )
        self.seed = check_int("seed", seed, 0)
        radius = check_int("window", window, 2) // 2
        self.one_hop_reach = check_int("layers", layers, 1) * radius
        self.diffusion_reach = check_int("hops", hops, 1) * self.one_hop_reach
        self.num_values = check_int("num_values", num_values, 2)
        self.num_fillers = check_int("num_fillers", num_fillers, 1)
        self.min_distance = check_int(
            "min_distance", self.one_hop_reach + 1 if min_distance is None else min_distance, 1
        )
        if max_distance is None:
            max_distance = min(2 * self.one_hop_reach, length - 1)
        self.max_distance = check_int("max_distance", max_distance, self.min_distance)
        # The key must exist in every (possibly truncated) sequence and be reachable by diffusion.
        limit = min(self.max_len, length) - 1
        if self.max_distance > min(limit, self.diffusion_reach):
            raise ValueError(
                f"max_distance={self.max_distance} must be <= {min(limit, self.diffusion_reach)}"
                f" (last position {limit}, diffusion reach {self.diffusion_reach} = hops * "
                f"layers * (window // 2))"
            )
        check_length(length, self.max_len, truncate, f"MultiHop {split}")
        self.vocab_size = NUM_SPECIAL + self.num_fillers + self.num_values
        self.num_classes = self.num_values
        self.pattern = Window(
            window
        )  # the pattern the task is built for (training uses it by default)

    def __len__(self) -> int:
        return self.num_samples

    def content(self, index: int) -> tuple[np.ndarray, int]:
        rng = example_rng(self.seed, self.split, index)
        distance = int(rng.integers(self.min_distance, self.max_distance + 1))
        value = int(rng.integers(self.num_values))
        tokens = NUM_SPECIAL + rng.integers(self.num_fillers, size=self.length - 1)
        tokens[distance - 1] = NUM_SPECIAL + self.num_fillers + value  # content starts at 1
        return tokens, value
