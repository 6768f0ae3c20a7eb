"""Document matching (LRA's Retrieval task): are two documents related? Read from LRA's AAN
files, or generated from a text corpus.

An example is a pair of documents and a label in {0, 1}: ``dataset[i] -> (tokens_a LongTensor
[La], tokens_b LongTensor [Lb], label int)``. Each document is byte-level text as in
:mod:`graphdiff.tasks.text`: CLS, then token ``2 + b`` for each byte ``b`` (``vocab_size =
258``), cut to ``max_len`` tokens. A model reads each document on its own (a two-tower model,
:class:`~graphdiff.models.DiffuserForRetrieval`); :func:`collate_pairs` pads a list of examples
into ``(tokens_a [B, La], mask_a, tokens_b [B, Lb], mask_b, labels [B])``.

LRA's files (:class:`RetrievalTSV`): ``new_aan_pairs.train.tsv``, ``new_aan_pairs.eval.tsv``
and ``new_aan_pairs.test.tsv`` from the ``tsv_data`` folder of LRA's ``lra_release``; pairs of
papers of the ACL Anthology Network (Radev et al. 2013), label 1 when one cites the other. LRA's
reader (``lra_benchmarks/matching/input_pipeline.py``) takes them as headerless TSV without
quoting, five columns per line::

    label <TAB> id1 <TAB> id2 <TAB> text1 <TAB> text2

``label`` is read as a float and cast to an integer (so ``0``, ``1``, ``0.0`` and ``1.0`` all
work); the ids are not used; the texts are taken byte for byte, as stored (no unquoting, no
unescaping), and encoded by bytes, 4,000 per document. LRA's encoder adds its own CLS in front,
so the default ``max_len`` here is 4,001: CLS and the same 4,000 bytes.

Generated (:class:`MatchingTask`, no files needed): label 1 pairs two non-overlapping chunks of
one document of a corpus (:func:`graphdiff.tasks.corpus.load_documents`, by default Python's
own documentation), label 0 chunks of two different documents, with the corpus split by
document so no text of a validation or test document is trained on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from graphdiff.checks import check_int
from graphdiff.tasks.base import (
    CLS,
    NUM_SPECIAL,
    TaskDataset,
    check_length,
    check_split,
    collate,
    example_rng,
)
from graphdiff.tasks.corpus import check_fractions, load_documents, split_documents

__all__ = [
    "AAN_FILES",
    "MatchingTask",
    "PairTask",
    "RetrievalTSV",
    "collate_pairs",
    "index_aan_tsv",
    "retrieval",
]

# The file of each split in LRA's tsv_data folder ("val" is LRA's "eval").
AAN_FILES = {
    "train": "new_aan_pairs.train.tsv",
    "val": "new_aan_pairs.eval.tsv",
    "test": "new_aan_pairs.test.tsv",
}
AAN_COLUMNS = ("label", "id1", "id2", "text1", "text2")
MATCHING_SPLIT_SIZES = {"train": 4000, "val": 500, "test": 500}


def collate_pairs(
    batch: Sequence[tuple[Tensor, Tensor, int]],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Pad a list of ``(tokens_a [La_i], tokens_b [Lb_i], label)`` examples into a batch.

    Returns:
        tokens_a: ``LongTensor [B, La]`` with ``La = max La_i``, right-padded with PAD (0).
        mask_a: ``BoolTensor [B, La]``, ``True`` on real tokens.
        tokens_b: ``LongTensor [B, Lb]`` with ``Lb = max Lb_i``, right-padded with PAD.
        mask_b: ``BoolTensor [B, Lb]``.
        labels: ``LongTensor [B]``.
    """
    if len(batch) == 0:
        raise ValueError("collate_pairs needs at least one example, got an empty batch")
    tokens_a, mask_a, labels = collate([(a, label) for a, _, label in batch])
    tokens_b, mask_b, _ = collate([(b, label) for _, b, label in batch])
    return tokens_a, mask_a, tokens_b, mask_b, labels


class PairTask(TaskDataset):
    """Base class of the matching datasets: ``dataset[i] -> (tokens_a, tokens_b, label)``.

    Subclasses implement ``__len__`` and :meth:`pair_content`; this class prepends CLS to each
    document and cuts it to ``max_len``. Batches are made with :func:`collate_pairs`
    (``collate``); ``objective = "retrieval"`` tells a training loop to feed both documents to
    a two-tower model.
    """

    vocab_size = NUM_SPECIAL + 256
    num_classes = 2
    objective = "retrieval"
    collate = staticmethod(collate_pairs)

    def pair_content(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Byte tokens of the two documents of example ``index`` (int arrays, CLS excluded;
        ``2 + b`` for byte ``b``) and its label."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, int]:
        a, b, label = self.pair_content(self._index(index))
        cls = torch.tensor([CLS])
        documents = (
            torch.as_tensor(np.asarray(t)[: self.max_len - 1], dtype=torch.long) for t in (a, b)
        )
        tokens_a, tokens_b = (torch.cat([cls, t]) for t in documents)
        return tokens_a, tokens_b, int(label)


def _parse_label(field: bytes) -> int:
    """LRA's label column, read as a float (``tf.float32``) that must be 0 or 1."""
    try:
        value = float(field)
    except ValueError:
        value = None
    if value not in (0.0, 1.0):
        raise ValueError(f"label must be 0 or 1 (0.0 or 1.0), got {field[:40]!r}")
    return int(value)


def index_aan_tsv(
    path: str | os.PathLike, max_len: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read an LRA Retrieval TSV file once: where each text is, and each label.

    The texts stay in the file: a row costs 33 bytes of memory here, whatever its length.

    Args:
        path: the TSV file.
        max_len: when given, a document longer than ``max_len - 1`` bytes raises (its length
            with CLS would exceed ``max_len``).

    Returns:
        ``(spans, labels)``: ``spans`` is int64 ``[N, 4]``, each row ``(start1, length1,
        start2, length2)``, the byte offsets and lengths of ``text1`` and ``text2`` in the
        file; ``labels`` is uint8 ``[N]`` in {0, 1}.

    Raises:
        ValueError: naming the file and line, for a line without exactly five tab-separated
            columns, a label other than 0 or 1, a text too long for ``max_len``, or a file
            without any line.
    """
    spans: list[tuple[int, int, int, int]] = []
    labels: list[int] = []
    offset = 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            # Windows line ends too; a text keeps any other "\r".
            body = line[:-2] if line.endswith(b"\r\n") else line.rstrip(b"\n")
            try:
                tabs = body.count(b"\t")
                if tabs != len(AAN_COLUMNS) - 1:
                    raise ValueError(
                        f"expected {len(AAN_COLUMNS)} tab-separated columns "
                        f"({', '.join(AAN_COLUMNS)}), got {tabs + 1}"
                    )
                cuts = [-1]
                for _ in range(tabs):
                    cuts.append(body.index(b"\t", cuts[-1] + 1))
                label = _parse_label(body[: cuts[1]])
                start1, start2 = cuts[3] + 1, cuts[4] + 1
                span = (offset + start1, cuts[4] - start1, offset + start2, len(body) - start2)
                if max_len is not None:
                    for column, length in (("text1", span[1]), ("text2", span[3])):
                        check_length(length + 1, max_len, False, column)
            except ValueError as err:
                raise ValueError(f"{path}:{number}: malformed LRA Retrieval line: {err}") from None
            spans.append(span)
            labels.append(label)
            offset += len(line)
    if not spans:
        raise ValueError(f"{path}:1: malformed LRA Retrieval file: empty, no examples")
    return np.array(spans, dtype=np.int64), np.array(labels, dtype=np.uint8)


class RetrievalTSV(PairTask):
    """LRA's Retrieval files: ``{data_dir}/new_aan_pairs.{train,eval,test}.tsv``.

    The file is read once, to check every line and note where each text is (33 bytes per
    row); each example's texts are read from the file when it is asked for, only as far as
    ``max_len`` needs. The file must not change while the dataset is in use (a change in its
    size or modification time raises).

    Args:
        split: ``"train"``, ``"val"`` (the ``eval`` file) or ``"test"``.
        data_dir: LRA's ``tsv_data`` directory, or one TSV file (read whatever the split).
        max_len: longest document, CLS included. (default: 4001, LRA's 4,000 bytes and CLS)
        truncate: cut longer documents, as LRA does; ``False`` makes a longer document an
            error naming its file and line. (default: ``True``)
    """

    def __init__(
        self,
        split: str = "train",
        data_dir: str | os.PathLike | None = None,
        max_len: int = 4001,
        truncate: bool = True,
    ) -> None:
        if not isinstance(truncate, bool):
            raise TypeError(f"truncate must be True or False, got {truncate!r}")
        super().__init__(split, max_len, truncate)
        if data_dir is None:
            raise ValueError(
                "data_dir: pass LRA's tsv_data directory (holding "
                f"{', '.join(AAN_FILES.values())}) or one of those files"
            )
        self.path = Path(data_dir)
        if self.path.is_dir():
            self.path = self.path / AAN_FILES[split]
        if not self.path.is_file():
            raise ValueError(
                f"data_dir: no LRA Retrieval file {self.path}; expected LRA's tsv_data "
                f"directory with {', '.join(AAN_FILES.values())} (the {split!r} split reads "
                f"{AAN_FILES[split]}), or one such file"
            )
        self.spans, self.labels = index_aan_tsv(self.path, None if truncate else self.max_len)
        self._stamp = self._file_stamp()

    def _file_stamp(self) -> tuple[int, int]:
        status = os.stat(self.path)
        return status.st_size, status.st_mtime_ns

    def __len__(self) -> int:
        return len(self.labels)

    def pair_content(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        if self._file_stamp() != self._stamp:
            raise RuntimeError(f"{self.path} changed after it was read; build the dataset again")
        start1, length1, start2, length2 = (int(value) for value in self.spans[index])
        keep = self.max_len - 1
        # pread: no shared file position, so DataLoader workers may read at once.
        descriptor = os.open(self.path, os.O_RDONLY)
        try:
            texts = [
                os.pread(descriptor, min(length, keep), start)
                for start, length in ((start1, length1), (start2, length2))
            ]
        finally:
            os.close(descriptor)
        a, b = (
            np.frombuffer(text, dtype=np.uint8).astype(np.int64) + NUM_SPECIAL for text in texts
        )
        return a, b, int(self.labels[index])


def _pair_starts(rng: np.random.Generator, length: int, chunk: int) -> tuple[int, int]:
    """Starts of two non-overlapping chunks of ``chunk`` bytes in a text of ``length >= 2 *
    chunk`` bytes, in random order: the gaps before, between and after them are drawn from
    two uniform cut points of the slack ``length - 2 * chunk``."""
    first, second = np.sort(rng.integers(0, length - 2 * chunk + 1, size=2))
    starts = (int(first), int(second) + chunk)
    return starts if rng.random() < 0.5 else starts[::-1]


class MatchingTask(PairTask):
    """Generated document matching: do two chunks of text come from the same document?

    Example ``i`` of a split is drawn from ``example_rng(seed, split, i)``; its label is
    ``i % 2`` (so the classes are balanced):

    - label 1: one document, two non-overlapping chunks of it (in random order);
    - label 0: two different documents, one chunk of each.

    Every chunk is ``max_len - 1`` bytes (with CLS, every document is ``max_len`` tokens, so
    length says nothing about the label). Documents are drawn uniformly among the split's
    documents of at least ``2 * (max_len - 1)`` bytes, for both labels; shorter documents are
    skipped, for both labels, so that a document's length cannot give the label away either.
    In a negative the first chunk is placed as the first of a non-overlapping pair in its
    document and the second as the second of a pair in its own, so the chunks' positions are
    distributed as in a positive.

    The corpus is split by document (:func:`graphdiff.tasks.corpus.split_documents`): the
    chunks of a split come only from its own documents.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        data_dir: a directory of UTF-8 text files; ``None`` for Python's own documentation
            (:func:`graphdiff.tasks.corpus.python_docs`).
        num_samples: examples in the split; default 4,000 / 500 / 500.
        seed: base seed; same arguments give the same examples.
        max_len: tokens per document, CLS included (chunks of ``max_len - 1`` bytes).
            (default: 1024)
        val_fraction, test_fraction: the shares of documents held out for ``"val"`` and
            ``"test"``. (default: 0.1 each)

    Raises:
        ValueError: when fewer than two of the split's documents are long enough for two
            chunks (naming the split, the counts and the length needed).
    """

    def __init__(
        self,
        split: str = "train",
        data_dir: str | os.PathLike | None = None,
        num_samples: int | None = None,
        seed: int = 0,
        max_len: int = 1024,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
    ) -> None:
        check_split(split)
        check_int("max_len", max_len, 2, why="a chunk needs at least one byte after CLS")
        super().__init__(split, max_len, truncate=False)
        self.num_samples = check_int(
            "num_samples", MATCHING_SPLIT_SIZES[split] if num_samples is None else num_samples, 0
        )
        self.seed = check_int("seed", seed, 0)
        check_fractions(val_fraction, test_fraction)
        self.chunk = self.max_len - 1
        documents = split_documents(load_documents(data_dir), split, val_fraction, test_fraction)
        self.documents = [doc for doc in documents if len(doc.text) >= 2 * self.chunk]
        if len(self.documents) < 2:
            raise ValueError(
                f"the {split} split has {len(self.documents)} of its {len(documents)} documents "
                f"with at least {2 * self.chunk} bytes (two chunks of max_len - 1 = "
                f"{self.chunk}); matching needs two: lower max_len or add longer documents"
            )

    def __len__(self) -> int:
        return self.num_samples

    def pair(self, index: int) -> tuple[tuple[int, int], tuple[int, int], int]:
        """Where the chunks of example ``index`` come from: ``(document, start)`` of each
        (documents numbered in :attr:`documents`) and the label."""
        rng = example_rng(self.seed, self.split, index)
        label = index % 2
        count = len(self.documents)
        first = int(rng.integers(count))
        if label:
            start_a, start_b = _pair_starts(rng, len(self.documents[first].text), self.chunk)
            return (first, start_a), (first, start_b), label
        second = (first + 1 + int(rng.integers(count - 1))) % count
        start_a, _ = _pair_starts(rng, len(self.documents[first].text), self.chunk)
        _, start_b = _pair_starts(rng, len(self.documents[second].text), self.chunk)
        return (first, start_a), (second, start_b), label

    def pair_content(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        (doc_a, start_a), (doc_b, start_b), label = self.pair(index)
        a, b = (
            np.frombuffer(
                self.documents[doc].text, dtype=np.uint8, count=self.chunk, offset=start
            ).astype(np.int64)
            + NUM_SPECIAL
            for doc, start in ((doc_a, start_a), (doc_b, start_b))
        )
        return a, b, label


SOURCES = ("lra", "text")


def retrieval(
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    source: str | None = None,
    **kwargs,
) -> RetrievalTSV | MatchingTask:
    """The Retrieval task: LRA's AAN files, or the generated matching task on a text corpus.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        data_dir: LRA's ``tsv_data`` directory (``source="lra"``) or a directory of text
            files (``source="text"``); ``None``: the matching task on Python's documentation.
        source: ``"lra"`` or ``"text"``; default ``"lra"`` when ``data_dir`` is given, else
            ``"text"``. ``"lra"`` needs a ``data_dir``.
        **kwargs: for :class:`RetrievalTSV` or :class:`MatchingTask` respectively.
    """
    if source is None:
        source = "text" if data_dir is None else "lra"
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if source == "text":
        return MatchingTask(split, data_dir, **kwargs)
    if data_dir is None:
        raise ValueError("source='lra' reads LRA's AAN files: give their directory as data_dir")
    return RetrievalTSV(split, data_dir, **kwargs)
