"""Argument checks shared by the patterns, the layer, the tasks, training and the analysis
package (the ``argparse`` types of the command line live in :mod:`graphdiff.cli_types`).

Torch-free, so that every importer (the analysis package too) can use it.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional, Tuple, Union

# Integers torch stores as int64 (seeds, positions): larger ones overflow deep inside torch.
INT64_LIMIT = 2**63 - 1

# The diffusion kernels of the layer and of the analysis: personalised PageRank and heat.
DIFFUSION_KERNELS = ("ppr", "heat")


def is_integer(value: Any) -> bool:
    """An integer, NumPy's included; not a bool (``alpha=True`` is a mistake, not 1)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A real number, NumPy's included; not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(
    name: str, value: Any, low: int = 0, high: Optional[int] = None, why: str = ""
) -> int:
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


def check_edge_index(
    edge_index: Any, num_nodes: Union[int, Tuple[int, int], None] = None, name: str = "edge_index"
) -> Any:
    """Check an edge_index against graphdiff's one rule, and return it unchanged.

    An edge_index is a ``[2, E]`` torch tensor or NumPy array of an integer dtype (not bool)
    whose row 0 holds the sources ``j`` (keys) and row 1 the targets ``i`` (queries), every
    index in ``[0, N_src)`` and ``[0, N_dst)`` respectively, or ``>= 0`` when the sizes are
    not known yet.

    Args:
        edge_index (torch.Tensor or numpy.ndarray): The edges, or a pair ``(src, dst)`` of
            ``[E]`` index tensors.
        num_nodes (int or (int, int), optional): ``N`` or ``(N_src, N_dst)``.
            (default: :obj:`None`)
        name (str, optional): The argument named in errors. (default: ``"edge_index"``)

    Raises:
        TypeError: when it is not an integer tensor or array.
        ValueError: on a wrong shape or an index out of range.
    """
    pair = isinstance(edge_index, tuple)
    for rows in edge_index if pair else (edge_index,):
        if not hasattr(rows, "dtype") or not hasattr(rows, "shape"):
            raise TypeError(f"'{name}' must be a torch.Tensor, got {type(rows).__name__}")
        # torch's and NumPy's integer dtypes alike: int8 ... int64, uint8 ... uint64.
        if not str(rows.dtype).replace("torch.", "").startswith(("int", "uint")):
            raise TypeError(
                f"'{name}' must have an integer dtype (torch.long preferred), got {rows.dtype}"
            )
    if pair:
        src, dst = edge_index
        if len(src.shape) != 1 or tuple(src.shape) != tuple(dst.shape):
            raise ValueError(
                f"'{name}' must be two [E] index tensors, got {list(src.shape)} "
                f"and {list(dst.shape)}"
            )
    else:
        if len(edge_index.shape) != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"'{name}' must have shape [2, E], got {list(edge_index.shape)}")
        src, dst = edge_index
    sizes = num_nodes if isinstance(num_nodes, tuple) else (num_nodes, num_nodes)
    if src.shape[0]:
        for role, index, size in (("source", src, sizes[0]), ("target", dst, sizes[1])):
            low, high = int(index.min()), int(index.max())
            if low < 0 or (size is not None and high >= size):
                allowed = ">= 0" if size is None else f"in [0, {int(size) - 1}]"
                raise ValueError(
                    f"'{name}' {role} indices must lie {allowed} (found range [{low}, {high}])"
                )
    return edge_index


__all__ = [
    "DIFFUSION_KERNELS",
    "INT64_LIMIT",
    "check_edge_index",
    "check_int",
    "is_integer",
    "is_real",
]
