"""ListOps (Nangia & Bowman 2018) as the Long Range Arena builds it: generator and TSV reader.

An example is a nested prefix expression over the digits 0-9 and a 10-way label, its value::

    [MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]   ->   5

Operators: ``[MIN``, ``[MAX``, ``[MED`` (median, the lower-middle mean rounded down for an even
count: LRA's ``int(np.median(args))``) and ``[SM`` (sum modulo 10); ``]`` closes an operator.

Vocabulary (fixed, ``vocab_size = 17``)::

    0 PAD   1 CLS   2..11 digits "0".."9"   12 "[MIN"   13 "[MAX"   14 "[MED"   15 "[SM"   16 "]"

Generator: LRA's ``generate_tree`` with its defaults. The root is at depth 1; a node at depth
``< max_depth`` is an operator with probability ``VALUE_P = 0.25`` (else a digit), with
``randint(2, max_args)`` arguments drawn the same way one level deeper; nodes at ``max_depth`` are
digits. A tree's length is its token count without parentheses (one per digit, two per operator:
the operator and its ``]``). Trees are drawn until ``min_length <= length <= max_length``; LRA's
strict ``500 < length < 2000`` is the default ``501..1999``. Example ``i`` of a split is drawn from
``example_rng(seed, split, i)``, so it is reproducible and cheap to regenerate on its own.

LRA's files (``basic_train.tsv``, ``basic_val.tsv``, ``basic_test.tsv``) hold a header line
``Source<TAB>Target`` and one example per line; ``Source`` is the expression in LRA's binarised
form with parentheses, e.g. ``( ( ( [MAX 2 ) 9 ) ] )``, which :func:`tokenize` reads by dropping
the parentheses. :func:`write_listops_tsv` writes the same format.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Union

import numpy as np

from graphdiff.checks import check_int
from graphdiff.io import atomic_write
from graphdiff.tasks.base import (
    NUM_SPECIAL,
    TaskDataset,
    check_length,
    example_rng,
)

__all__ = [
    "END",
    "OPERATORS",
    "VOCAB",
    "ListOps",
    "ListOpsTSV",
    "Tree",
    "check_generator_args",
    "encode",
    "evaluate",
    "generate_tree",
    "listops",
    "read_listops_tsv",
    "to_lra_source",
    "to_tokens",
    "tokenize",
    "write_listops_tsv",
]

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
DIGITS = tuple(str(d) for d in range(10))
VOCAB = DIGITS + OPERATORS + (END,)
TOKEN_IDS = {token: NUM_SPECIAL + i for i, token in enumerate(VOCAB)}
VALUE_P = 0.25
# A generator whose length window is (nearly) unreachable would loop forever; give up instead.
MAX_ATTEMPTS = 100_000
LRA_SPLIT_SIZES = {"train": 96_000, "val": 2_000, "test": 2_000}

# A digit, or (operator, [arguments]).
Tree = Union[int, tuple[str, list["Tree"]]]


def evaluate(tree: Tree) -> int:
    """The value of ``tree`` in 0..9 (LRA's ``to_value``)."""
    if isinstance(tree, int):
        return tree
    op, args = tree
    values = sorted(evaluate(arg) for arg in args)
    if op == "[MIN":
        return values[0]
    if op == "[MAX":
        return values[-1]
    if op == "[MED":
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) // 2
    return sum(values) % 10


def to_tokens(tree: Tree) -> list[str]:
    """Prefix tokens of ``tree`` without parentheses, e.g. ``["[SM", "1", "2", "]"]``."""
    if isinstance(tree, int):
        return [DIGITS[tree]]
    op, args = tree
    return [op, *(token for arg in args for token in to_tokens(arg)), END]


def to_lra_source(tree: Tree) -> str:
    """``tree`` in LRA's binarised, parenthesised form (``[MAX 2 9 ]``: ``( ( ( [MAX 2 ) 9 ) ] )``).

    LRA nests ``(((op, a0), a1), ..., END)`` and prints every pair as ``( left right )``.
    """
    if isinstance(tree, int):
        return DIGITS[tree]
    op, args = tree
    body = "".join(f" {to_lra_source(arg)} )" for arg in args)
    return "( " * (len(args) + 1) + op + body + f" {END} )"


def tokenize(source: str) -> list[str]:
    """Tokens of an LRA ``Source`` string: whitespace-separated, parentheses dropped."""
    return source.replace("(", " ").replace(")", " ").split()


def encode(tokens: Iterable[str]) -> np.ndarray:
    """Token ids (int64 [L]) of ``tokens``; an unknown token raises ``ValueError``."""
    try:
        return np.array([TOKEN_IDS[token] for token in tokens], dtype=np.int64)
    except KeyError as err:
        raise ValueError(f"unknown ListOps token {err.args[0]!r}; known: {VOCAB}") from None


def _grow(
    rng: np.random.Generator, depth: int, max_depth: int, max_args: int, budget: int
) -> tuple[Tree, int] | None:
    """A subtree rooted at ``depth`` and its length, or None once it exceeds ``budget`` tokens."""
    if depth >= max_depth or rng.random() > VALUE_P:
        return (int(rng.integers(10)), 1) if budget >= 1 else None
    args: list[Tree] = []
    length = 2
    for _ in range(int(rng.integers(2, max_args + 1))):
        grown = _grow(rng, depth + 1, max_depth, max_args, budget - length)
        if grown is None:  # stop early: the rest of an over-long tree is never looked at
            return None
        args.append(grown[0])
        length += grown[1]
    return (OPERATORS[int(rng.integers(len(OPERATORS)))], args), length


def _longest(max_depth: int, max_args: int) -> int:
    """The length of the largest tree the generator can draw."""
    length = 1
    for _ in range(max_depth - 1):
        length = 2 + max_args * length
    return length


def check_generator_args(max_depth: int, max_args: int, min_length: int, max_length: int) -> None:
    """Raise ``ValueError`` unless the generator can draw a tree of ``min_length..max_length``."""
    check_int("max_depth", max_depth, 1)
    check_int("max_args", max_args, 2)
    check_int("min_length", min_length, 1)
    check_int("max_length", max_length, min_length)
    if min_length > _longest(max_depth, max_args):
        raise ValueError(
            f"min_length={min_length} exceeds the longest tree max_depth={max_depth}, "
            f"max_args={max_args} can make ({_longest(max_depth, max_args)} tokens)"
        )


def generate_tree(
    rng: np.random.Generator,
    max_depth: int = 10,
    max_args: int = 10,
    min_length: int = 501,
    max_length: int = 1999,
) -> Tree:
    """Draw trees from LRA's distribution until one has ``min_length..max_length`` tokens.

    Raises:
        ValueError: when the window is out of reach of ``max_depth``/``max_args`` (checked up
            front) or no tree fell in it within ``MAX_ATTEMPTS`` draws.
    """
    check_generator_args(max_depth, max_args, min_length, max_length)
    for _ in range(MAX_ATTEMPTS):
        grown = _grow(rng, 1, max_depth, max_args, max_length)
        if grown is not None and grown[1] >= min_length:
            return grown[0]
    raise ValueError(
        f"no tree with {min_length}..{max_length} tokens in {MAX_ATTEMPTS} draws "
        f"(max_depth={max_depth}, max_args={max_args}); widen the length window"
    )


def write_listops_tsv(path: str | os.PathLike, trees: Iterable[Tree]) -> None:
    """Write ``trees`` as an LRA ListOps TSV (header, ``source<TAB>value`` lines), atomically."""

    def write(handle) -> None:
        handle.write("Source\tTarget\n")
        for tree in trees:
            handle.write(f"{to_lra_source(tree)}\t{evaluate(tree)}\n")

    atomic_write(path, write, text=True)


def read_listops_tsv(path: str | os.PathLike) -> tuple[list[np.ndarray], np.ndarray]:
    """Read an LRA ListOps TSV file.

    Returns:
        sequences: one uint8 array [L_i] of token ids per example (CLS not included).
        labels: int64 array [N] in 0..9.

    Raises:
        ValueError: naming the file and line, for a bad header, a line without exactly two
            tab-separated fields, an unknown token, an empty source, a label outside 0..9, or
            a file without examples.
    """
    sequences: list[np.ndarray] = []
    labels: list[int] = []
    header_seen = False
    # Binary lines, decoded one at a time: a decoding error then names its own line.
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
                fields = line.split("\t")
                if not header_seen:
                    if fields != ["Source", "Target"]:
                        raise ValueError(f"expected the header 'Source<TAB>Target', got {line!r}")
                    header_seen = True
                    continue
                if len(fields) != 2:
                    raise ValueError(f"expected 2 tab-separated fields, got {len(fields)}")
                source, target = fields
                tokens = encode(tokenize(source))
                if tokens.size == 0:
                    raise ValueError("empty Source")
                if target.strip() not in DIGITS:
                    raise ValueError(f"Target must be a digit 0-9, got {target!r}")
            except ValueError as err:  # UnicodeDecodeError is one too
                raise ValueError(f"{path}:{number}: malformed ListOps line: {err}") from None
            # uint8 holds every id (vocab_size 17) at an eighth of int64's memory.
            sequences.append(tokens.astype(np.uint8))
            labels.append(int(target))
    if not header_seen:
        raise ValueError(f"{path}:1: malformed ListOps file: empty, no 'Source<TAB>Target' header")
    if not sequences:  # a cut download, say: validating on it would report accuracy 0
        raise ValueError(f"{path}:2: malformed ListOps file: no examples after the header")
    return sequences, np.array(labels, dtype=np.int64)


class ListOps(TaskDataset):
    """Generated ListOps: example ``i`` of ``split`` is a fresh tree drawn from its own seed.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (distinct random streams).
        num_samples: examples in the split; default LRA's sizes (96000 / 2000 / 2000).
        seed: base seed; same arguments give the same examples.
        max_depth, max_args, min_length, max_length: the generator's arguments (LRA defaults).
        max_len: longest sequence, CLS included; default ``max_length + 1``.
        truncate: allow ``max_len < max_length + 1`` and cut long sequences (labels then refer
            to the uncut expression).

    Examples are generated on access (a few ms each at LRA's lengths); write them once with
    :func:`write_listops_tsv` and use :class:`ListOpsTSV` for long training runs.
    """

    vocab_size = NUM_SPECIAL + len(VOCAB)
    num_classes = 10

    def __init__(
        self,
        split: str = "train",
        num_samples: int | None = None,
        seed: int = 0,
        max_depth: int = 10,
        max_args: int = 10,
        min_length: int = 501,
        max_length: int = 1999,
        max_len: int | None = None,
        truncate: bool = False,
    ) -> None:
        check_int("max_length", max_length, 1)
        super().__init__(split, max_length + 1 if max_len is None else max_len, truncate)
        self.num_samples = check_int(
            "num_samples", LRA_SPLIT_SIZES[split] if num_samples is None else num_samples, 0
        )
        self.seed = check_int("seed", seed, 0)
        self.generator_args = dict(
            max_depth=max_depth, max_args=max_args, min_length=min_length, max_length=max_length
        )
        check_generator_args(**self.generator_args)
        check_length(max_length + 1, self.max_len, truncate, f"ListOps {split}")

    def __len__(self) -> int:
        return self.num_samples

    def tree(self, index: int) -> Tree:
        """The expression tree of example ``index``."""
        return generate_tree(example_rng(self.seed, self.split, index), **self.generator_args)

    def content(self, index: int) -> tuple[np.ndarray, int]:
        tree = self.tree(index)
        return encode(to_tokens(tree)), evaluate(tree)


class ListOpsTSV(TaskDataset):
    """LRA's ListOps files: ``{data_dir}/basic_{split}.tsv`` (``basic_val.tsv`` for ``"val"``).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        data_dir: directory holding the TSV files, or one TSV file (read whatever the split).
        max_len: longest sequence, CLS included (LRA: 2000).
        truncate: cut longer sequences instead of raising ``ValueError`` naming file and line.
    """

    vocab_size = NUM_SPECIAL + len(VOCAB)
    num_classes = 10

    def __init__(
        self,
        split: str,
        data_dir: str | os.PathLike,
        max_len: int = 2000,
        truncate: bool = False,
    ) -> None:
        super().__init__(split, max_len, truncate)
        self.path = Path(data_dir)
        if self.path.is_dir():
            self.path = self.path / f"basic_{split}.tsv"
        if not self.path.is_file():
            raise ValueError(f"data_dir: no ListOps file {self.path}")
        self.sequences, self.labels = read_listops_tsv(self.path)
        # Every line after the header is one example, so example i sits on line i + 2.
        for number, tokens in enumerate(self.sequences, start=2):
            check_length(tokens.size + 1, self.max_len, truncate, f"{self.path}:{number}")

    def __len__(self) -> int:
        return len(self.sequences)

    def content(self, index: int) -> tuple[np.ndarray, int]:
        return self.sequences[index], int(self.labels[index])


def listops(
    split: str = "train", data_dir: str | os.PathLike | None = None, **kwargs
) -> ListOps | ListOpsTSV:
    """The ListOps task: LRA's files when ``data_dir`` is given, else the generator.

    ``kwargs`` go to :class:`ListOpsTSV` or :class:`ListOps` respectively.
    """
    if data_dir is None:
        return ListOps(split, **kwargs)
    return ListOpsTSV(split, data_dir, **kwargs)
