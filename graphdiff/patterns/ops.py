"""Set operations on patterns: union ``|``, intersection ``&``, ``.causal()``, ``.symmetric()``.

Self-loops are added during canonicalisation, after the operation; the results are the same as
operating on the canonical edge sets, because every operation here commutes with adding the
diagonal (``(p & q) + I = (p + I) & (q + I)``, and self-loops are causal and symmetric).
"""

from __future__ import annotations

import torch

from graphdiff.patterns.base import Edges, Pattern


def _operand(pattern: Pattern, binds_tighter_than: type) -> str:
    """``repr`` of an operand, in parentheses when Python's precedence requires them."""
    text = repr(pattern)
    return f"({text})" if isinstance(pattern, binds_tighter_than) else text


def _patterns(operation: str, parts: tuple) -> tuple:
    """``parts`` after checking that there is at least one and that all are patterns."""
    if not parts:
        raise ValueError(f"{operation} needs at least one pattern")
    for part in parts:
        if not isinstance(part, Pattern):
            raise TypeError(f"{operation} can only combine patterns, got {type(part).__name__}")
    return parts


def _flatten(operation: type, parts: tuple) -> tuple:
    """``parts`` with nested ``operation`` patterns replaced by their own parts: the operation is
    associative, so ``(a | b) | c`` and ``a | (b | c)`` become the same value with one repr."""
    return tuple(
        flat for part in parts for flat in (part.parts if isinstance(part, operation) else [part])
    )


class PatternUnion(Pattern):
    """Edges present in any of the patterns (``p | q``). Nested unions are flattened."""

    def __init__(self, *parts: Pattern):
        self.parts = _flatten(PatternUnion, _patterns("union", parts))

    def _key(self) -> tuple:
        return self.parts

    def _edges(self, n: int) -> Edges:
        edges = [part._edges(n) for part in self.parts]
        return torch.cat([src for src, _ in edges]), torch.cat([dst for _, dst in edges])

    def __repr__(self) -> str:
        return " | ".join(repr(part) for part in self.parts)


class Intersection(Pattern):
    """Edges present in every one of the patterns (``p & q``). Nested intersections are
    flattened."""

    def __init__(self, *parts: Pattern):
        self.parts = _flatten(Intersection, _patterns("intersection", parts))

    def _key(self) -> tuple:
        return self.parts

    def _edges(self, n: int) -> Edges:
        # Canonical keys (target * n + source) are sorted and unique, so isin is a set test.
        first, *rest = (part(n) for part in self.parts)
        key = first[1] * n + first[0]
        for edge_index in rest:
            key = key[torch.isin(key, edge_index[1] * n + edge_index[0], assume_unique=True)]
        return key % n, key // n

    def __repr__(self) -> str:
        return " & ".join(_operand(part, PatternUnion) for part in self.parts)


class _Transform(Pattern):
    """A pattern derived from one other pattern, written ``base.<method>()``."""

    method = ""

    def __init__(self, base: Pattern):
        (self.base,) = _patterns(type(self).__name__, (base,))

    def _key(self) -> tuple:
        return (self.base,)

    def __repr__(self) -> str:
        return f"{_operand(self.base, (PatternUnion, Intersection))}.{self.method}()"


class Causal(_Transform):
    """Keep the edges ``j -> i`` with ``j <= i``: a query never attends a later key."""

    method = "causal"

    def _edges(self, n: int) -> Edges:
        src, dst = self.base._edges(n)
        keep = src <= dst
        return src[keep], dst[keep]


class Symmetric(_Transform):
    """Add the reverse ``i -> j`` of every edge ``j -> i``."""

    method = "symmetric"

    def _edges(self, n: int) -> Edges:
        src, dst = self.base._edges(n)
        return torch.cat([src, dst]), torch.cat([dst, src])
