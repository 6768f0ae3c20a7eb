"""Argument checks shared by the patterns, the data sets, the analysis package, and (as
``argparse`` types) the command-line scripts of examples/, experiments/ and benchmarks/.

Torch-free, so that every importer (the analysis package too) can use it.
"""
from __future__ import annotations

import argparse
import numbers
from typing import Any, Optional

# Integers torch stores as int64 (seeds, positions): larger ones overflow deep inside torch.
INT64_LIMIT = 2**63 - 1


def is_integer(value: Any) -> bool:
    """An integer, NumPy's included; not a bool (``alpha=True`` is a mistake, not 1)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A real number, NumPy's included; not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(name: str, value: Any, low: int = 0, high: Optional[int] = None,
              why: str = "") -> int:
    """``value`` as an int in ``[low, high]`` (no upper end when ``high`` is ``None``).

    The error names the argument and the allowed range (DESIGN 3); ``why`` says what a value
    out of range means. Numpy integers count as integers, bools do not.

    Raises:
        TypeError: when ``value`` is not an integer.
        ValueError: when it is out of range.
    """
    allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
    if not is_integer(value):
        raise TypeError(f"{name} must be an integer {allowed}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be {allowed}{f' ({why})' if why else ''}, got {value}")
    return int(value)


def positive_int(text: str) -> int:
    """``argparse`` type: an integer ``>= 1``, or a usage error naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """``argparse`` type: a number ``> 0``, or a usage error naming the value."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def distinct(values: list, name: str, parser: argparse.ArgumentParser) -> list:
    """``values`` of a repeated option, or a usage error when one repeats (a repeated seed
    would count one run twice in a mean and a standard deviation)."""
    if len(set(values)) != len(values):
        parser.error(f"{name} must be distinct, got {values}")
    return values


__all__ = ["INT64_LIMIT", "check_int", "distinct", "is_integer", "is_real", "positive_float", "positive_int"]
