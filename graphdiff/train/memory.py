"""Handing the C allocator's free memory back to the operating system during training.

Batches of varying lengths allocate tensors of ever new sizes. glibc's malloc keeps the blocks
they free for later requests, split and scattered over its heaps, so the resident memory of a
long run creeps up by hundreds of megabytes that nothing uses (docs/performance.md, "Memory
allocator"). ``malloc_trim(0)`` returns those free pages; the pages the next step needs are
then faulted in again, which is why the training loop trims every ``log_every`` steps rather
than after each one.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from typing import Callable, Optional


@functools.lru_cache(maxsize=None)
def _malloc_trim() -> Optional[Callable[[int], int]]:
    """glibc's ``malloc_trim``, or ``None`` where the C library has none (macOS, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> bool:
    """Return the allocator's free heap pages to the operating system (glibc's
    ``malloc_trim(0)``). Memory in use, tensors included, is untouched.

    Returns:
        :obj:`True` when it ran, :obj:`False` where the C library has no ``malloc_trim``.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


__all__ = ["release_free_memory"]
