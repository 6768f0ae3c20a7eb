"""``argparse`` argument types shared by the ``graphdiff`` command and the scripts of
examples/, experiments/ and benchmarks/: a bad value is a usage error that names it.

Torch-free, so that a script's ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
from typing import List, Optional


def positive_int(text: str) -> int:
    """``argparse`` type: an integer ``>= 1``, or a usage error naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_int_or_all(text: str) -> Optional[int]:
    """``argparse`` type: an integer ``>= 1``, or ``all`` (``None``: no limit)."""
    if text == "all":
        return None
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"{error} or 'all'") from None


def positive_float(text: str) -> float:
    """``argparse`` type: a number ``> 0``, or a usage error naming the value."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def distinct(values: List, name: str, parser: argparse.ArgumentParser) -> List:
    """``values`` of a repeated option, or a usage error when one repeats (a repeated seed
    would count one run twice in a mean and a standard deviation)."""
    if len(set(values)) != len(values):
        parser.error(f"{name} must be distinct, got {values}")
    return values


__all__ = ["distinct", "positive_float", "positive_int", "positive_int_or_all"]
