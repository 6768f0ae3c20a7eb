"""Argument checks shared by the patterns, the layer, the tasks, training and the analysis
package (the ``argparse`` types of the command line live in :mod:`graphdiff.cli_types`).

Torch-free, so that every importer (the analysis package too) can use it.
"""
from __future__ import annotations

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

    The error names the argument and the allowed range; ``why`` says what a value
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


__all__ = ["INT64_LIMIT", "check_int", "is_integer", "is_real"]
