"""The one byte-bounded cache of built graph structures.

Everything graphdiff keeps between calls lives here, under one budget: the canonical
``edge_index`` of a pattern per length (:class:`graphdiff.patterns.Pattern`), the block-diagonal
``edge_index`` of a batch of lengths (:func:`graphdiff.data.graph_batch`), and the CSR
structures of :func:`graphdiff.nn.diffusion_graph` (with their lazily built transposes and
stacked-head copies, counted as they grow).

Two rules keep it from holding what cannot be used again:

- an entry *admitted on repeat* (batched edges, structures) is kept only the second time its
  key is asked for, so a stream of batches of random lengths, each new, caches none of them;
- an entry keyed on an object (a structure keyed on its adjacency tensor) dies with the object.

>>> import graphdiff.cache
>>> graphdiff.cache.set_budget(256 * 2**20)   # bytes; 0 disables caching
>>> graphdiff.cache.cached_bytes()             # what is kept now
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any, Callable, Dict, Hashable, Optional, Tuple

import torch
from torch import Tensor

from graphdiff.checks import is_integer

DEFAULT_BUDGET = 256 * 2**20
# What a remembered key (admission on repeat) is charged: the key tuple and its dict slot.
KEY_BYTES = 256
# Keys asked for once are remembered up to this many (oldest forgotten first).
MAX_REMEMBERED_KEYS = 4096


def nbytes(value: Any) -> int:
    """Bytes held by a cached value: a tensor, a tuple of tensors, or an object with an
    ``nbytes()`` method (a :class:`~graphdiff.nn.DiffusionGraph`, whose size grows)."""
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, tuple):
        return sum(nbytes(item) for item in value)
    return int(value.nbytes())


def _versions(value: Any) -> Tuple[int, ...]:
    if isinstance(value, Tensor):
        return (value._version,)
    if isinstance(value, tuple):
        return tuple(version for item in value for version in _versions(item))
    return ()


class _Entry:
    __slots__ = ("value", "versions", "size", "owner")

    def __init__(self, value: Any, owner: Optional[weakref.ref]) -> None:
        self.value, self.owner = value, owner
        self.versions = _versions(value)
        self.size = nbytes(value)


class StructureCache:
    """Least-recently-used cache bounded by the total bytes of everything it keeps.

    A count bound would be wrong both ways: ListOps-style batches need hundreds of short
    lengths, while a handful of million-token patterns already take gigabytes.

    Cached tensors are handed out, not copied, so everyone who got one shares it. An edit in
    place reaches those holders, but not later calls: torch's version counter shows that the
    entry changed, and the next :meth:`get` builds a fresh one. Writes that bypass the
    counter (through ``.data`` or a NumPy view) are not seen.

    Args:
        max_bytes (int): The budget in bytes. (default: ``DEFAULT_BUDGET``, 256 MiB)
    """

    def __init__(self, max_bytes: int = DEFAULT_BUDGET) -> None:
        self.max_bytes = _check_budget(max_bytes)
        self.entries: "OrderedDict[Hashable, _Entry]" = OrderedDict()
        self.remembered: "OrderedDict[Hashable, Optional[weakref.ref]]" = OrderedDict()
        # One clean-up per key while its owner lives, however often the entry is readmitted.
        self.finalizers: Dict[Hashable, weakref.finalize] = {}

    @property
    def bytes(self) -> int:
        """Bytes kept now: every entry's current size and the remembered keys."""
        self._refresh()
        return self._counted()

    def _counted(self) -> int:
        return sum(entry.size for entry in self.entries.values()) + KEY_BYTES * len(self.remembered)

    def get(
        self,
        key: Hashable,
        build: Callable[[], Any],
        *,
        owner: Any = None,
        admit_on_repeat: bool = False,
    ) -> Any:
        """The cached value of ``key``, or ``build()``, kept when it fits.

        Args:
            key: What identifies the value (hashable).
            build: Builds the value when it is not cached.
            owner (optional): An object the entry belongs to (compared by identity, held by a
                weak reference): the entry dies with it. (default: :obj:`None`)
            admit_on_repeat (bool, optional): Keep the value only when ``key`` was asked for
                before. (default: :obj:`False`)
        """
        entry = self.entries.get(key)
        if entry is not None:
            if (entry.owner is None or entry.owner() is owner) and _versions(
                entry.value
            ) == entry.versions:
                self.entries.move_to_end(key)
                return entry.value
            del self.entries[key]  # edited in place, or another object under a reused id
        with torch.inference_mode(False):  # inference tensors have no version counter
            value = build()
        if self.max_bytes == 0 or (admit_on_repeat and not self._seen_before(key, owner)):
            return value
        try:
            ref = None if owner is None else weakref.ref(owner)
        except TypeError:  # not weak-referenceable: not cached
            return value
        new = _Entry(value, ref)
        self._refresh()
        if new.size > self.max_bytes:  # returned but not kept, and evicting nothing for it
            return value
        self._evict(self.max_bytes - new.size)
        self.entries[key] = new
        if ref is not None and key not in self.finalizers:
            self.finalizers[key] = weakref.finalize(owner, self._drop_dead, key)
        return value

    def _seen_before(self, key: Hashable, owner: Any) -> bool:
        ref = self.remembered.pop(key, False)
        if ref is not False and (ref is None or ref() is owner):
            return True
        try:
            self.remembered[key] = None if owner is None else weakref.ref(owner)
        except TypeError:
            return False
        while len(self.remembered) > MAX_REMEMBERED_KEYS:
            self.remembered.popitem(last=False)
        self._evict(self.max_bytes)
        return False

    def _refresh(self) -> None:
        """Re-measure the entries that grow after they were built (structures)."""
        for entry in self.entries.values():
            if not isinstance(entry.value, (Tensor, tuple)):
                entry.size = nbytes(entry.value)

    def _evict(self, room: int) -> None:
        """Drop the least recently used entries, then the oldest remembered keys, until at
        most ``room`` bytes are kept."""
        total = self._counted()
        while self.entries and total > room:
            total -= self.entries.popitem(last=False)[1].size
        while self.remembered and total > room:
            self.remembered.popitem(last=False)
            total -= KEY_BYTES

    def _drop_dead(self, key: Hashable) -> None:
        self.finalizers.pop(key, None)
        entry = self.entries.get(key)
        if entry is not None and entry.owner is not None and entry.owner() is None:
            del self.entries[key]

    def set_budget(self, max_bytes: int) -> None:
        """Change the budget, evicting the least recently used entries beyond it."""
        self.max_bytes = _check_budget(max_bytes)
        self._refresh()
        self._evict(self.max_bytes)

    def clear(self) -> None:
        """Drop every entry and every remembered key."""
        self.entries.clear()
        self.remembered.clear()


def _check_budget(max_bytes: Any) -> int:
    if not is_integer(max_bytes) or max_bytes < 0:
        raise ValueError(f"'max_bytes' must be an int >= 0 (got {max_bytes!r})")
    return int(max_bytes)


CACHE = StructureCache()


def set_budget(max_bytes: int) -> None:
    """Set the byte budget of graphdiff's one cache (:data:`CACHE`); ``0`` disables caching.

    The default, ``DEFAULT_BUDGET`` (256 MiB), holds the patterns, batches and structures of
    a training run at fixed lengths up to tens of thousands of tokens."""
    CACHE.set_budget(max_bytes)


def cached_bytes() -> int:
    """Bytes the cache keeps now, structures (and their stacked-head copies) included."""
    return CACHE.bytes


def clear() -> None:
    """Empty the cache."""
    CACHE.clear()
