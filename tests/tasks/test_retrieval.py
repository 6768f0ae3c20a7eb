"""LRA Retrieval: the AAN TSV reader against files written here in LRA's format, the generated
matching task's labels checked by finding each chunk in the corpus, and the pair collate."""

import pickle

import numpy as np
import pytest
import torch

from graphdiff.tasks import CLS, NUM_SPECIAL, PAD
from graphdiff.tasks import retrieval as retrieval_module
from graphdiff.tasks.corpus import Document, read_documents, split_documents
from graphdiff.tasks.retrieval import (
    AAN_FILES,
    MatchingTask,
    RetrievalTSV,
    collate_pairs,
    retrieval,
)

# LRA's format: label, id1, id2, text1, text2; no header, no quoting. Texts as the released
# files hold them (Python bytes literals, backslash escapes and all), plus one non-UTF-8 byte.
ROWS = [
    ("1.0", "P05-1018", "W06-1621", b"b'Parsing with \\n trees'", b"b'We parse.'"),
    ("0.0", "C02-1011", "J93-2004", b"b'A \"quoted\" word'", b"b'caf\xe9 \\xe9'"),
    ("1", "A00-1001", "A00-1002", b"", b"b'x'"),
    ("0", "A00-1003", "A00-1004", b"b'short'", b"b'" + b"long text " * 20 + b"'"),
]


def write_tsv(path, rows, line_end=b"\n"):
    path.write_bytes(
        b"".join(
            b"\t".join([label.encode(), id1.encode(), id2.encode(), text1, text2]) + line_end
            for label, id1, id2, text1, text2 in rows
        )
    )
    return path


def byte_tokens(text):
    return [CLS] + [NUM_SPECIAL + b for b in text]


@pytest.fixture
def tsv_dir(tmp_path):
    for split, name in AAN_FILES.items():
        rows = ROWS if split == "train" else ROWS[:2] if split == "val" else ROWS[2:]
        write_tsv(tmp_path / name, rows)
    return tmp_path


def test_tsv_examples_are_the_texts_bytes(tsv_dir):
    train = RetrievalTSV("train", tsv_dir)
    assert len(train) == 4 and (train.vocab_size, train.num_classes) == (258, 2)
    assert (train.objective, train.max_len) == ("retrieval", 4001)
    for (label, _, _, text1, text2), (a, b, y) in zip(ROWS, train):
        assert a.dtype == b.dtype == torch.long
        assert a.tolist() == byte_tokens(text1)
        assert b.tolist() == byte_tokens(text2)
        assert y == int(float(label))
    assert [len(RetrievalTSV(split, tsv_dir)) for split in ("val", "test")] == [2, 2]
    assert RetrievalTSV("val", tsv_dir)[1][1].tolist() == byte_tokens(ROWS[1][4])


def test_tsv_file_given_directly_and_windows_line_ends(tmp_path):
    path = write_tsv(tmp_path / "pairs.tsv", ROWS, line_end=b"\r\n")
    data = RetrievalTSV("test", path)
    assert [data[i][1].tolist() for i in range(4)] == [byte_tokens(row[4]) for row in ROWS]


def test_tsv_truncates_each_document_to_max_len(tsv_dir):
    data = RetrievalTSV("train", tsv_dir, max_len=6)
    for (_, _, _, text1, text2), (a, b, _) in zip(ROWS, data):
        assert a.tolist() == byte_tokens(text1[:5])
        assert b.tolist() == byte_tokens(text2[:5])
    longest = max(max(len(row[3]), len(row[4])) for row in ROWS)
    assert RetrievalTSV("train", tsv_dir, max_len=longest + 1, truncate=False)[3][1].numel() == (
        longest + 1
    )
    with pytest.raises(ValueError, match=r"new_aan_pairs.train.tsv:1: .*text1.* exceeds max_len=6"):
        RetrievalTSV("train", tsv_dir, max_len=6, truncate=False)
    with pytest.raises(ValueError, match=r"new_aan_pairs.train.tsv:4: .*text2.* exceeds"):
        RetrievalTSV("train", tsv_dir, max_len=longest, truncate=False)


def test_tsv_missing_file_lists_the_expected_files(tmp_path):
    (tmp_path / AAN_FILES["train"]).write_bytes(b"1\ta\tb\tx\ty\n")
    with pytest.raises(ValueError, match=r"new_aan_pairs.eval.tsv; expected .*train.tsv, .*"):
        RetrievalTSV("val", tmp_path)
    with pytest.raises(ValueError, match="pass LRA's tsv_data directory"):
        RetrievalTSV("train", None)
    with pytest.raises(TypeError, match="truncate must be True or False, got 'false'"):
        RetrievalTSV("train", tmp_path, truncate="false")


@pytest.mark.parametrize(
    "line, message",
    [
        (b"1.0\tP1\tP2\tonly four", "expected 5 tab-separated columns .* got 4"),
        (b"1.0\tP1\tP2\ttext\tmore\tand more", "expected 5 tab-separated columns .* got 6"),
        (b"", "expected 5 tab-separated columns .* got 1"),
        (b"label\tid1\tid2\ttext1\ttext2", "label must be 0 or 1 .* got b'label'"),
        (b"2\tP1\tP2\tx\ty", "label must be 0 or 1 .* got b'2'"),
        (b"0.5\tP1\tP2\tx\ty", "label must be 0 or 1"),
        (b"nan\tP1\tP2\tx\ty", "label must be 0 or 1"),
    ],
)
def test_tsv_malformed_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "pairs.tsv"
    path.write_bytes(b"1.0\tP1\tP2\tfine\tfine\n" + line + b"\n")
    with pytest.raises(ValueError, match=f"pairs.tsv:2: malformed LRA Retrieval line: {message}"):
        RetrievalTSV("train", path)


def test_tsv_empty_file(tmp_path):
    (tmp_path / "pairs.tsv").write_bytes(b"")
    with pytest.raises(ValueError, match="pairs.tsv:1: .* empty, no examples"):
        RetrievalTSV("train", tmp_path / "pairs.tsv")


def test_tsv_keeps_offsets_not_texts_and_notices_a_changed_file(tmp_path):
    path = write_tsv(tmp_path / "pairs.tsv", ROWS)
    data = RetrievalTSV("train", path)
    assert data.spans.nbytes + data.labels.nbytes == 33 * len(ROWS)
    copy = pickle.loads(pickle.dumps(data))  # DataLoader workers may get a pickled copy
    assert copy[3][1].tolist() == byte_tokens(ROWS[3][4])
    write_tsv(path, ROWS[::-1])
    with pytest.raises(RuntimeError, match="pairs.tsv changed after it was read"):
        data[0]


def test_collate_pairs_pads_each_side_on_its_own():
    batch = [
        (torch.tensor([CLS, 5, 6]), torch.tensor([CLS]), 1),
        (torch.tensor([CLS]), torch.tensor([CLS, 7, 8, 9, 10]), 0),
    ]
    tokens_a, mask_a, tokens_b, mask_b, labels = collate_pairs(batch)
    assert tokens_a.tolist() == [[CLS, 5, 6], [CLS, PAD, PAD]]
    assert mask_a.tolist() == [[True, True, True], [True, False, False]]
    assert tokens_b.tolist() == [[CLS, PAD, PAD, PAD, PAD], [CLS, 7, 8, 9, 10]]
    assert mask_b.tolist() == [[True, False, False, False, False], [True] * 5]
    assert labels.tolist() == [1, 0]
    assert RetrievalTSV.collate is collate_pairs and MatchingTask.collate is collate_pairs
    with pytest.raises(ValueError, match="collate_pairs needs at least one example"):
        collate_pairs([])


# -- the generated task -------------------------------------------------------------------------

ALPHABET = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    """40 documents of random letters (so any 16 bytes occur once in the whole corpus), 40 to
    800 bytes long: with max_len=65 (chunks of 64) those under 128 bytes cannot be used."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(7)
    for i in range(40):
        length = int(rng.integers(40, 800))
        (root / f"doc{i:02d}.txt").write_bytes(ALPHABET[rng.integers(0, 26, length)].tobytes())
    return root


def locate(chunk, documents):
    """(name, start) of the one document holding ``chunk``."""
    found = [(doc.name, doc.text.find(chunk)) for doc in documents if chunk in doc.text]
    assert len(found) == 1, found
    return found[0]


def decode(tokens):
    assert tokens[0] == CLS
    return bytes((tokens[1:] - NUM_SPECIAL).tolist())


def test_matching_labels_hold_by_construction(corpus_dir):
    documents = read_documents(corpus_dir)
    sources = {}
    for split in ("train", "val", "test"):
        data = MatchingTask(split, corpus_dir, num_samples=60, max_len=65, seed=3)
        own = {doc.name for doc in split_documents(documents, split)}
        sources[split] = set()
        for index, (a, b, label) in enumerate(data):
            assert a.shape == b.shape == (65,) and label == index % 2
            (name_a, start_a), (name_b, start_b) = (locate(decode(t), documents) for t in (a, b))
            assert {name_a, name_b} <= own  # no chunk from another split's documents
            if label:
                assert name_a == name_b and abs(start_a - start_b) >= 64  # no overlap
            else:
                assert name_a != name_b
            sources[split] |= {name_a, name_b}
    assert not (sources["train"] & sources["val"] or sources["train"] & sources["test"])
    assert not sources["val"] & sources["test"]
    # Documents too short for two chunks are used for neither label.
    lengths = {doc.name: len(doc.text) for doc in documents}
    assert min(lengths[name] for names in sources.values() for name in names) >= 128
    assert min(lengths.values()) < 128


def test_matching_is_balanced_and_deterministic(corpus_dir):
    data = MatchingTask("train", corpus_dir, num_samples=200, max_len=65, seed=1)
    labels = [data[i][2] for i in range(200)]
    assert sum(labels) == 100
    again = MatchingTask("train", corpus_dir, num_samples=200, max_len=65, seed=1)
    for i in (0, 1, 57, 199):
        assert all(torch.equal(x, y) for x, y in zip(data[i][:2], again[i][:2]))
    other_seed = MatchingTask("train", corpus_dir, num_samples=200, max_len=65, seed=2)
    assert not all(torch.equal(data[i][0], other_seed[i][0]) for i in range(10))
    assert len(MatchingTask("val", corpus_dir, max_len=65)) == 500


def test_matching_chunk_positions_do_not_give_the_label_away(corpus_dir):
    """Every chunk, of either label, starts where one of a non-overlapping pair can: in a
    document of n bytes, at most n - 128 (the first of a pair) or at least 64 (the second).
    Drawn uniformly instead, a negative's chunk could start in between, where no positive's
    does, in documents shorter than 3 * 64 bytes (and the corpus has some)."""
    data = MatchingTask("train", corpus_dir, num_samples=2000, max_len=65, seed=0)
    short, seen = {i for i, doc in enumerate(data.documents) if len(doc.text) < 192}, set()
    for index in range(len(data)):
        *chunks, label = data.pair(index)
        for doc, start in chunks:
            n = len(data.documents[doc].text)
            assert 0 <= start <= n - 64 and (start <= n - 128 or start >= 64)
            if doc in short:
                seen.add(label)
    assert short and seen == {0, 1}


def test_matching_errors(corpus_dir):
    with pytest.raises(ValueError, match="the val split has 0 of its 4 documents with at least"):
        MatchingTask("val", corpus_dir, max_len=500)
    with pytest.raises(ValueError, match="max_len must be >= 2"):
        MatchingTask("train", corpus_dir, max_len=1)
    with pytest.raises(ValueError, match="split must be one of"):
        MatchingTask("dev", corpus_dir)
    with pytest.raises(ValueError, match="val_fraction"):
        MatchingTask("train", corpus_dir, val_fraction=0.0)


def test_factory_reads_files_with_a_data_dir_and_generates_without(tsv_dir, monkeypatch):
    assert isinstance(retrieval("val", tsv_dir), RetrievalTSV)
    # Without data_dir, the default corpus (Python's documentation, slow to parse) is read.
    texts = [Document(f"d{i}", bytes([97 + i]) * 300) for i in range(20)]
    monkeypatch.setattr(retrieval_module, "load_documents", lambda data_dir: texts)
    task = retrieval("train", max_len=33, num_samples=10)
    assert isinstance(task, MatchingTask) and len(task) == 10
    assert retrieval_module.MATCHING_SPLIT_SIZES == {"train": 4000, "val": 500, "test": 500}
