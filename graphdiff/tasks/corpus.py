"""Text corpora for the language-modelling tasks: documents read from a directory, or Python's
own documentation, and a fixed split by document.

A :class:`Document` is a name and its UTF-8 bytes. :func:`load_documents` reads a directory of
text files (:func:`read_documents`) or, without one, returns :func:`python_docs`: English prose
that every Python installation carries, so the tasks run on a fresh machine with nothing to
download. :func:`split_documents` holds out whole documents for validation and test, so no text
of a held-out document is ever trained on.
"""

from __future__ import annotations

import ast
import functools
import os
import sysconfig
import warnings
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from graphdiff.checks import is_real
from graphdiff.tasks.base import SPLITS, check_split

__all__ = [
    "Document",
    "check_fractions",
    "load_documents",
    "python_docs",
    "read_documents",
    "split_documents",
]

# Standard-library modules with less docstring text than this are mostly signatures: skipped.
MIN_MODULE_DOC_BYTES = 2000
# Top-level folders of the standard library that hold tests, the IDLE editor or installed
# third-party packages rather than documented library modules.
EXCLUDED_STDLIB_FOLDERS = ("test", "idlelib", "site-packages")


class Document(NamedTuple):
    """One text: ``name`` (a relative path, or ``pydoc/<topic>``, ``stdlib/<module>``) and
    ``text``, its UTF-8 encoded bytes."""

    name: str
    text: bytes


def _check_text(path: Path, text: bytes) -> None:
    """Raise ``ValueError`` naming ``path`` and the offset when ``text`` is not UTF-8 text."""
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not UTF-8 text (byte 0x{text[error.start]:02x} at offset {error.start} "
            f"is invalid: {error.reason}); only UTF-8 text files can be read"
        ) from None
    nul = text.find(b"\0")
    if nul != -1:
        raise ValueError(f"{path}: binary, not text (NUL byte at offset {nul})")


DOCUMENT_BLOCK = 1 << 18  # bytes: a longer file counts as blocks of this size


def read_documents(data_dir: str | os.PathLike) -> list[Document]:
    """Every non-empty text file under ``data_dir``, recursively, sorted by relative path.

    Hidden files and folders (a name starting with ``.``) and empty files are skipped, and so
    is whatever is not a regular file (a socket, a pipe, a broken link); links to files are
    read, links to folders are not followed (a link cycle would never end). Each document is
    named by its path relative to ``data_dir`` with ``/`` separators and keeps the file's bytes
    as they are. A file longer than :data:`DOCUMENT_BLOCK` bytes (256 KiB) counts as its
    consecutive blocks of that size, named ``path#0``, ``path#1``, ...: a corpus that comes as
    one large file (enwik8, text8) then splits into train, validation and test by block.

    Raises:
        FileNotFoundError: when ``data_dir`` does not exist.
        ValueError: naming the path, when ``data_dir`` is not a directory or holds no non-empty
            file, and naming the file and the byte offset, for a file that is not UTF-8 text
            or holds a NUL byte (binary).
    """
    root = Path(data_dir)
    if not root.exists():
        raise FileNotFoundError(f"data_dir: {root} does not exist")
    if not root.is_dir():
        raise ValueError(f"data_dir: {root} is not a directory")
    documents = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for name in files:
            path = Path(folder) / name
            if name.startswith(".") or not path.is_file():
                continue
            text = path.read_bytes()
            if text:
                _check_text(path, text)
                name = path.relative_to(root).as_posix()
                if len(text) <= DOCUMENT_BLOCK:
                    documents.append(Document(name, text))
                else:
                    documents.extend(
                        Document(f"{name}#{block}", text[start : start + DOCUMENT_BLOCK])
                        for block, start in enumerate(range(0, len(text), DOCUMENT_BLOCK))
                    )
    if not documents:
        raise ValueError(f"data_dir: {root} holds no non-empty text file (hidden files skipped)")
    return sorted(documents)


def _docstrings(node: ast.AST) -> Iterator[str]:
    """The docstrings of ``node`` and of every module, class and function in it, in source
    order (``ast.walk`` goes breadth-first)."""
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        docstring = ast.get_docstring(node, clean=True)
        if docstring:
            yield docstring
    for child in ast.iter_child_nodes(node):
        yield from _docstrings(child)


def _module_name(relative: Path) -> str:
    parts = relative.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.lru_cache(maxsize=1)
def _python_docs() -> tuple[Document, ...]:
    from pydoc_data.topics import topics

    documents = [Document(f"pydoc/{topic}", text.encode("utf-8")) for topic, text in topics.items()]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py")):
        relative = path.relative_to(stdlib)
        if relative.parts[0] in EXCLUDED_STDLIB_FOLDERS:
            continue
        with warnings.catch_warnings():  # invalid escapes in old modules warn on 3.12+
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(path.read_bytes(), filename=str(path))
        # A docstring may spell a lone surrogate as an escape: such a character becomes "?".
        text = "\n\n".join(_docstrings(tree)).encode("utf-8", errors="replace")
        if len(text) >= MIN_MODULE_DOC_BYTES:
            documents.append(Document(f"stdlib/{_module_name(relative)}", text))
    return tuple(sorted(documents))


def python_docs() -> list[Document]:
    """Python's own documentation as a corpus of English prose: the default text of the
    language-modelling tasks, present wherever Python is, nothing to download.

    Two parts, sorted by name:

    - ``pydoc/<topic>``: the help topics of ``pydoc_data.topics`` (what ``help("TOPIC")``
      prints): the chapters of the Python Language Reference, one document per topic, e.g.
      ``pydoc/assignment`` ("Assignment statements").
    - ``stdlib/<module>``: for each module of the standard library (its top-level ``*.py``
      files and the modules of its top-level packages; ``test``, ``idlelib`` and
      ``site-packages`` excluded), the docstrings of the module and of its classes and
      functions (``ast.get_docstring(clean=True)``) in source order, joined by blank lines;
      modules with fewer than 2,000 bytes of them are skipped.

    On Python 3.11 that is 79 topics (466 KB) and 182 modules (1.43 MB): 261 documents, about
    1.9 MB, almost all ASCII. The text depends on the Python version (each release edits its
    documentation), so results on it compare across machines only at one Python version.
    Parsing the standard library takes a few seconds; the result is cached for the process.

    Returns:
        A new list of :class:`Document` on each call (the cache is not exposed).
    """
    return list(_python_docs())


def load_documents(data_dir: str | os.PathLike | None) -> list[Document]:
    """The documents under ``data_dir`` (:func:`read_documents`), or :func:`python_docs` when it
    is ``None``."""
    return python_docs() if data_dir is None else read_documents(data_dir)


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise ``ValueError`` unless both fractions are numbers in (0, 1) with a sum below 1."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not is_real(value) or not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be below 1 (the rest is the train split), got "
            f"{val_fraction} + {test_fraction}"
        )


def split_documents(
    documents: Sequence[Document],
    split: str,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> list[Document]:
    """The documents of ``split``: a fixed split by document, so every text is in one split.

    The documents are sorted by name and permuted with ``np.random.default_rng(0)``; of the
    ``n`` in that order, the last ``round(n * test_fraction)`` are ``"test"``, the
    ``round(n * val_fraction)`` before them ``"val"`` and the others ``"train"``. The split
    depends only on the names and the fractions, not on the order given.

    Args:
        documents: the corpus (names unique).
        split: ``"train"``, ``"val"`` or ``"test"``.
        val_fraction: share of documents in ``"val"``, in (0, 1). (default: 0.1)
        test_fraction: share of documents in ``"test"``, in (0, 1). (default: 0.1)

    Returns:
        The documents of ``split`` in the permuted order.

    Raises:
        ValueError: for an unknown ``split``, fractions out of range, a repeated name, or a
            split that would be empty (naming the counts).
    """
    check_split(split)
    check_fractions(val_fraction, test_fraction)
    ordered = sorted(documents)
    names = [document.name for document in ordered]
    repeated = sorted({a for a, b in zip(names, names[1:]) if a == b})
    if repeated:
        raise ValueError(f"documents: names must be unique, repeated: {repeated[:5]}")
    n = len(ordered)
    n_test = round(n * test_fraction)
    n_val = round(n * val_fraction)
    bounds = {"train": (0, n - n_val - n_test), "val": (n - n_val - n_test, n - n_test)}
    start, stop = bounds.get(split, (n - n_test, n))
    if start == stop:
        counts = ", ".join(
            f"{count} {name}" for name, count in zip(SPLITS, (n - n_val - n_test, n_val, n_test))
        )
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} leave the {split} "
            f"split empty ({n} documents: {counts})"
        )
    order = np.random.default_rng(0).permutation(n)
    return [ordered[i] for i in order[start:stop]]
