"""Keep freed host memory for reuse: long sequences on CPU without page faults at every step.

glibc serves every allocation over its mmap threshold (at most 32 MB) with fresh pages from
the kernel and unmaps them when the tensor is freed. A training step at 64k tokens allocates
many such tensors (a layer's ``[N, 4D]`` feed-forward activations are 268 MB at D = 256), so
each step faults all their pages in again, one by one; on the 2-core VM of the README that made
a whole Diffuser layer grow 5.6x in operator time from 16k to 64k tokens instead of 4.3x
(``benchmarks/profile_scaling.py --layer``). :func:`reuse_freed_memory` makes glibc keep freed
memory in the heap for the next allocation, as a caching allocator (jemalloc, tcmalloc, or
PyTorch's own on GPUs) does. The environment variables ``MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=1099511627776`` do the same from the start of a process.
"""
from __future__ import annotations

import ctypes
import ctypes.util

# mallopt parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1


def reuse_freed_memory() -> bool:
    """Make this process's glibc allocator keep freed memory for reuse instead of returning it
    to the kernel: no ``mmap`` per large allocation, and no trimming of the heap below 2 GiB of
    free memory at its top. Applies to allocations made after the call. The process's resident
    memory then stays near its peak between steps.

    Returns ``True`` when applied, ``False`` where the C library is not glibc (macOS, musl,
    Windows), which is left unchanged.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, _INT_MAX))
