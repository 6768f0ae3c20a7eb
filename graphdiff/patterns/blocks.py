"""Building blocks of sparse attention patterns.

Every block generates its edges ``j -> i`` ("query i attends key j") with vectorised tensor
operations: no Python loop over tokens and no ``n x n`` array, so a million tokens take seconds.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence, Tuple

import torch
from torch import Tensor

from graphdiff.checks import INT64_LIMIT, check_int
from graphdiff.patterns.base import Edges, Pattern


def key_grid_edges(keys: Tensor) -> Edges:
    """Edges ``keys[i, m] -> i`` for a ``[n, w]`` grid of candidate keys, dropping those outside
    ``[0, n)``."""
    n = keys.size(0)
    inside = (keys >= 0) & (keys < n)
    return keys[inside], torch.arange(n).unsqueeze(1).expand_as(keys)[inside]


def offset_edges(n: int, offsets: Tensor) -> Edges:
    """Edges ``j = i + d -> i`` for every query ``i`` and offset ``d`` that stays inside
    ``[0, n)``."""
    return key_grid_edges(torch.arange(n).unsqueeze(1) + offsets.unsqueeze(0))


def sample_distinct(rows: int, num: int, population: int, seed: int) -> Tensor:
    """``[rows, num]`` integers: for each row, ``num`` distinct values uniform in
    ``[0, population)``.

    Floyd's algorithm, vectorised over rows: ``num`` steps, each one random draw per row, so the
    cost is ``O(rows * num^2)`` comparisons and never ``O(rows * population)``.
    """
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.empty(rows, num, dtype=torch.long)
    for step, top in enumerate(range(population - num, population)):
        draw = torch.randint(0, top + 1, (rows,), generator=generator)
        taken = (chosen[:, :step] == draw.unsqueeze(1)).any(dim=1)
        chosen[:, step] = torch.where(taken, torch.full_like(draw, top), draw)
    return chosen


def sample_others(rows: int, num: int, seed: int) -> Tensor:
    """``[rows, min(num, rows - 1)]``: for each row ``r``, distinct values in ``[0, rows)``
    minus ``r``."""
    num = min(num, rows - 1)
    if num == rows - 1:  # everyone else: no sampling needed
        others = torch.arange(rows - 1).expand(rows, num)
    else:
        others = sample_distinct(rows, num, rows - 1, seed)
    # Drawing from rows - 1 values and shifting those >= r up by one skips r itself.
    return others + (others >= torch.arange(rows).unsqueeze(1)).long()


class Window(Pattern):
    r"""Sliding window: query :math:`i` attends key :math:`j` when
    :math:`|i - j| \le \lfloor size / 2 \rfloor` and :math:`(i - j) \bmod dilation = 0`.

    Args:
        size (int): window width; each side reaches ``size // 2`` positions.
        dilation (int, optional): keep every ``dilation``-th position inside the window.
            (default: ``1``)
    """

    def __init__(self, size: int, dilation: int = 1):
        self.size = check_int("size", size, low=0)
        self.dilation = check_int("dilation", dilation, low=1)

    def _key(self) -> tuple:
        return (self.size, self.dilation)

    def _edges(self, n: int) -> Edges:
        half = min(self.size // 2, n - 1)  # farther offsets fall outside every sequence of n
        reach = half - half % self.dilation
        offsets = torch.arange(-reach, reach + 1, self.dilation)
        return offset_edges(n, offsets)

    def __repr__(self) -> str:
        extra = f", dilation={self.dilation}" if self.dilation != 1 else ""
        return f"Window({self.size}{extra})"


class BlockWindow(Pattern):
    """The official Diffuser window: the sequence is cut into blocks of ``size // 2`` tokens and
    every token attends all tokens of its own block and of the two neighbouring blocks.

    Args:
        size (int): window width (at least 2); blocks hold ``size // 2`` tokens.
    """

    def __init__(self, size: int):
        self.size = check_int("size", size, low=2)

    def _key(self) -> tuple:
        return (self.size,)

    def _edges(self, n: int) -> Edges:
        block = min(self.size // 2, n)  # one block of n tokens already covers the sequence
        first_key = (
            torch.arange(n).unsqueeze(1) // block - 1
        ) * block  # start of the previous block
        return key_grid_edges(
            first_key + torch.arange(3 * block).unsqueeze(0)
        )  # [n, 3 * block] candidates

    def __repr__(self) -> str:
        return f"BlockWindow({self.size})"


class Global(Pattern):
    """Global tokens attend every token and are attended by every token.

    Args:
        num (int, optional): the first ``num`` positions are global (all of them when
            ``num >= n``, so that a preset works on sequences shorter than its global part).
        last (int, optional): and the last ``last`` positions, likewise capped at ``n``
            (BigBird's global blocks sit at both ends). Only with ``num``.
        indices (sequence of int, optional): explicit global positions; negative indices count
            from the end (``-1`` is the last token), resolved for each length. A position
            outside the sequence is an error.

    Exactly one of ``num`` and ``indices`` must be given.
    """

    def __init__(
        self, num: Optional[int] = None, *, last: int = 0, indices: Optional[Sequence[int]] = None
    ):
        if (num is None) == (indices is None):
            raise ValueError("Global needs exactly one of num or indices")
        self.num = None if num is None else check_int("num", num, low=0)
        self.last = check_int("last", last, low=0)
        if self.last and indices is not None:
            raise ValueError(
                "Global's last counts positions like num; give it with num, not with indices"
            )
        self.indices: Optional[Tuple[int, ...]] = None
        if indices is not None:
            if isinstance(indices, (str, bytes)) or not isinstance(indices, Iterable):
                raise TypeError(f"Global indices must be a sequence of integers, got {indices!r}")
            indices = tuple(indices)  # once: an iterator would be used up by the checks
            self.indices = tuple(
                check_int(f"Global indices[{k}]", i, low=-INT64_LIMIT, high=INT64_LIMIT)
                for k, i in enumerate(indices)
            )

    def _key(self) -> tuple:
        return (self.num, self.last, self.indices)

    def positions(self, n: int) -> Tensor:
        """The global positions for length ``n`` (validated, may contain duplicates)."""
        if self.num is not None:
            return torch.cat(
                [torch.arange(min(self.num, n)), torch.arange(n - min(self.last, n), n)]
            )
        index = torch.tensor(self.indices, dtype=torch.long)
        if index.numel() and (index.min() < -n or index.max() >= n):
            raise ValueError(
                f"Global indices must lie in [-n, n) = [{-n}, {n}), got {list(self.indices)}"
            )
        return index % n

    def _edges(self, n: int) -> Edges:
        hubs = self.positions(n)
        everyone = torch.arange(n)
        hub, other = hubs.repeat_interleave(n), everyone.repeat(hubs.numel())
        return torch.cat([hub, other]), torch.cat([other, hub])  # hub -> all, all -> hub

    def __repr__(self) -> str:
        if self.num is not None:
            return f"Global({self.num}, last={self.last})" if self.last else f"Global({self.num})"
        return f"Global(indices={list(self.indices)})"


class Random(Pattern):
    """Each query attends ``num`` distinct keys drawn uniformly from the other positions (all of
    them when ``num >= n - 1``). Deterministic in ``(num, seed, n)``.

    Args:
        num (int): random keys per query.
        seed (int, optional): random seed. (default: ``0``)
    """

    def __init__(self, num: int, seed: int = 0):
        self.num = check_int("num", num, low=0)
        self.seed = check_int("seed", seed, low=0, high=INT64_LIMIT)

    def _key(self) -> tuple:
        return (self.num, self.seed)

    def _edges(self, n: int) -> Edges:
        keys = sample_others(n, self.num, self.seed)  # [n, min(num, n - 1)]
        queries = torch.arange(n).unsqueeze(1).expand_as(keys)
        return keys.reshape(-1), queries.reshape(-1)

    def __repr__(self) -> str:
        return f"Random({self.num}, seed={self.seed})"


class BlockRandom(Pattern):
    """BigBird's random blocks: the sequence is cut into blocks of ``block`` tokens and every query
    block attends all tokens of ``num_blocks`` distinct other blocks drawn uniformly (all of them
    when there are fewer). Deterministic in ``(block, num_blocks, seed, n)``.

    Args:
        block (int): block size.
        num_blocks (int): random key blocks per query block.
        seed (int, optional): random seed. (default: ``0``)
    """

    def __init__(self, block: int, num_blocks: int, seed: int = 0):
        self.block = check_int("block", block, low=1)
        self.num_blocks = check_int("num_blocks", num_blocks, low=0)
        self.seed = check_int("seed", seed, low=0, high=INT64_LIMIT)

    def _key(self) -> tuple:
        return (self.block, self.num_blocks, self.seed)

    def _edges(self, n: int) -> Edges:
        block = min(self.block, n)  # one block of n tokens already covers the sequence
        blocks = math.ceil(n / block)
        key_blocks = sample_others(blocks, self.num_blocks, self.seed)  # [blocks, r]
        query_blocks = torch.arange(blocks).unsqueeze(1).expand_as(key_blocks)
        within = torch.arange(block)
        # Every (query block, key block) pair expands to block x block token pairs.
        queries = (query_blocks.reshape(-1, 1, 1) * block + within.view(1, -1, 1)).expand(
            -1, -1, block
        )
        keys = (key_blocks.reshape(-1, 1, 1) * block + within.view(1, 1, -1)).expand(-1, block, -1)
        inside = (queries < n) & (keys < n)
        return keys[inside], queries[inside]

    def __repr__(self) -> str:
        return f"BlockRandom({self.block}, {self.num_blocks}, seed={self.seed})"


class Strided(Pattern):
    """The Sparse Transformer's strided pattern (Child et al., 2019), bidirectional: query ``i``
    attends key ``j`` when ``|i - j| < stride`` (the local head) or ``(i - j) % stride == 0``
    (the strided head). ``Strided(s).causal()`` is the original autoregressive pattern.

    Args:
        stride (int): the stride, typically about ``sqrt(n)``.
    """

    def __init__(self, stride: int):
        self.stride = check_int("stride", stride, low=1)

    def _key(self) -> tuple:
        return (self.stride,)

    def _edges(self, n: int) -> Edges:
        reach = min(self.stride, n) - 1  # farther offsets fall outside every sequence of n
        local = torch.arange(-reach, reach + 1)
        far = (n - 1) // self.stride * self.stride
        strided = torch.arange(-far, far + 1, self.stride)
        return offset_edges(n, torch.unique(torch.cat([local, strided])))

    def __repr__(self) -> str:
        return f"Strided({self.stride})"


class Full(Pattern):
    """Every query attends every key: dense attention as a graph (small ``n`` only)."""

    MAX_EDGES = 2**28

    def _key(self) -> tuple:
        return ()

    def _edges(self, n: int) -> Edges:
        if n * n > self.MAX_EDGES:
            raise ValueError(
                f"Full() on n={n} tokens would have {n * n} edges (limit {self.MAX_EDGES}); "
                "use dense attention for that, or a sparse pattern"
            )
        everyone = torch.arange(n)
        return everyone.repeat(n), everyone.repeat_interleave(n)

    def __repr__(self) -> str:
        return "Full()"
