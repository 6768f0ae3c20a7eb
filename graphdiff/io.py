"""Atomic file writes: a crash mid-write leaves the previous file intact.

The one place that writes files for graphdiff (checkpoints, metrics, figures, data files).
It imports nothing from graphdiff, so every layer of the package may use it.
"""

from __future__ import annotations

import os
import tempfile
from typing import IO, Callable, Union

PathLike = Union[str, "os.PathLike[str]"]


def atomic_write(path: PathLike, write: Callable[[IO], None], text: bool = False) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it over ``path``.

    Args:
        path: the destination; its directory is created when missing.
        write: writes the content to the open file object it receives.
        text: open the temporary file in text mode (UTF-8, ``\\n`` newlines) instead of binary.
    """
    path = os.path.realpath(os.fspath(path))  # through a symlink: replace its target, keep the link
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    descriptor, tmp = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        mode = "w" if text else "wb"
        with os.fdopen(
            descriptor, mode, **({"encoding": "utf-8", "newline": "\n"} if text else {})
        ) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600: keep the mode of the file replaced, or give a new one the usual.
        if os.path.exists(path):
            permissions = os.stat(path).st_mode & 0o7777
        else:
            umask = os.umask(0)
            os.umask(umask)
            permissions = 0o666 & ~umask
        os.chmod(tmp, permissions)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    """:func:`atomic_write` of one string, UTF-8 with ``\\n`` newlines."""
    atomic_write(path, lambda handle: handle.write(text), text=True)
