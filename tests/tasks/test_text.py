"""Text task: aclImdb reviews as bytes, read from a fixture directory the tests write."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphdiff.cli import main
from graphdiff.tasks import CLS, NUM_SPECIAL, TextTask, get_task, text

REVIEWS = {  # (part, label folder, file name) -> text; non-ASCII, HTML breaks and newlines kept
    ("train", "pos", "10_9.txt"): "Wonderful<br /><br />film. Caf\u00e9 scenes \u2605\u2605\u2605",
    ("train", "pos", "2_8.txt"): "Good.",
    ("train", "pos", "1_7.txt"): "Fine acting\nand a plot.",
    ("train", "neg", "3_1.txt"): "Dull and long " * 5,
    ("train", "neg", "0_2.txt"): "Bad.",
    ("train", "neg", "11_4.txt"): "Meh",
    ("test", "pos", "0_10.txt"): "Best of the year.",
    ("test", "neg", "5_3.txt"): "\u00c9vitez-le.",
}


def write_acl_imdb(root):
    for (part, label, name), review in REVIEWS.items():
        (root / part / label).mkdir(parents=True, exist_ok=True)
        (root / part / label / name).write_text(review, encoding="utf-8")
    (root / "train" / "unsup").mkdir()
    (root / "train" / "unsup" / "0_0.txt").write_text("unlabelled: never read")
    return root


def expected_examples(part):
    """(tokens without CLS, label) of each review of ``part``, by text: the bytes less surrounding
    whitespace, as TFDS's imdb_reviews (LRA's source) reads them (``imdb_f.read().strip()``)."""
    return {
        text.strip(): (
            [NUM_SPECIAL + b for b in text.encode("utf-8").strip()],
            ("neg", "pos").index(label),
        )
        for (p, label, _), text in REVIEWS.items()
        if p == part
    }


def examples(dataset):
    out = {}
    for i in range(len(dataset)):
        tokens, label = dataset[i]
        assert tokens[0] == CLS
        text = bytes((tokens[1:] - NUM_SPECIAL).tolist()).decode("utf-8")
        out[text] = (tokens[1:].tolist(), label)
    return out


def test_bytes_labels_and_splits(tmp_path):
    root = write_acl_imdb(tmp_path)
    train = get_task("text", "train", data_dir=root, val_fraction=0.34)
    val = TextTask("val", data_dir=root, val_fraction=0.34)
    test = TextTask("test", data_dir=root)
    assert (train.vocab_size, train.num_classes, train.max_len) == (258, 2, 4096)
    assert (len(train), len(val), len(test)) == (4, 2, 2)
    # train and val partition train/ (unsup is not read), each review once
    assert {**examples(train), **examples(val)} == expected_examples("train")
    assert not set(examples(train)) & set(examples(val))
    assert examples(test) == expected_examples("test")
    # the split is fixed: the same files every time
    assert examples(TextTask("val", data_dir=root, val_fraction=0.34)) == examples(val)


def test_long_reviews_are_cut_or_refused(tmp_path):
    root = write_acl_imdb(tmp_path)
    cut = [
        dataset[i]
        for split in ("train", "val")
        for dataset in [TextTask(split, data_dir=root, val_fraction=0.5, max_len=8)]
        for i in range(len(dataset))
    ]
    assert len(cut) == 6 and max(len(tokens) for tokens, _ in cut) == 8
    assert [NUM_SPECIAL + b for b in b"Dull an"] in [
        tokens[1:].tolist() for tokens, _ in cut
    ]  # the first bytes
    with pytest.raises(
        ValueError, match=r"\d+_\d+\.txt: sequence of \d+ tokens .* exceeds max_len=8"
    ):
        TextTask("train", data_dir=root, val_fraction=0.5, max_len=8, truncate=False)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda root: TextTask("train"), "pass the aclImdb directory"),
        (
            lambda root: TextTask("train", data_dir=root / "missing"),
            "no folder .*missing/train/neg",
        ),
        (lambda root: TextTask("train", data_dir=root, val_fraction=1.0), "val_fraction"),
        (lambda root: TextTask("dev", data_dir=root), "split must be one of"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, make, match):
    with pytest.raises(ValueError, match=match):
        make(write_acl_imdb(tmp_path))


def test_a_stray_file_name_is_named(tmp_path):
    root = write_acl_imdb(tmp_path)
    (root / "test" / "pos" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"notes\.txt: not an aclImdb review file name"):
        TextTask("test", data_dir=root)


def test_trains_from_the_command_line(tmp_path, capsys):
    root = write_acl_imdb(tmp_path / "aclImdb")
    assert (
        main(
            [
                "train",
                "--task",
                "text",
                "--data-dir",
                str(root),
                "--max-steps",
                "2",
                "--batch-size",
                "2",
                "--task-arg",
                "val_fraction=0.34",
                "--task-arg",
                "max_len=64",
                "--pattern",
                "Window(8)",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["step"] == 2 and metrics["val_examples"] == 2
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run" / "last.pt")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["examples"] == 2


def test_empty_labels_splits_and_non_files_are_named(tmp_path):
    root = write_acl_imdb(tmp_path)
    with pytest.raises(ValueError, match="leaves the val split .* empty"):
        TextTask("val", data_dir=root, val_fraction=0.01)
    with pytest.raises(ValueError, match="val_fraction must be a number"):
        TextTask("val", data_dir=root, val_fraction="0.1")
    (root / "test" / "neg" / "5_3.txt").unlink()
    with pytest.raises(ValueError, match=r"no reviews in .*test/neg"):
        TextTask("test", data_dir=root)
    (root / "train" / "pos" / "99_9.txt").mkdir()
    with pytest.raises(ValueError, match=r"99_9\.txt: not a readable file"):
        TextTask("train", data_dir=root)


def test_split_membership_and_order_are_pinned(tmp_path):
    """The fixed shuffle of train/'s sorted files, pinned: a change in how splits are read keeps
    it."""
    root = write_acl_imdb(tmp_path)
    members = {
        split: [
            f"{path.parent.name}/{path.name}"
            for path in TextTask(split, data_dir=root, val_fraction=0.5).paths
        ]
        for split in ("train", "val", "test")
    }
    assert members == {
        "train": ["pos/1_7.txt", "neg/11_4.txt", "pos/10_9.txt"],
        "val": ["pos/2_8.txt", "neg/0_2.txt", "neg/3_1.txt"],
        "test": ["neg/5_3.txt", "pos/0_10.txt"],
    }
    val = TextTask("val", data_dir=root, val_fraction=0.5)
    assert [val[i][1] for i in range(len(val))] == [1, 0, 0]
    assert [bytes((val[i][0][1:] - NUM_SPECIAL).tolist()) for i in range(len(val))] == [
        REVIEWS["train", "pos", "2_8.txt"].encode(),
        b"Bad.",
        REVIEWS["train", "neg", "3_1.txt"].encode().strip(),
    ]


def test_each_split_reads_only_its_own_reviews(tmp_path, monkeypatch):
    root = write_acl_imdb(tmp_path)
    opened = []
    real_open = open

    def recording_open(file, *args, **kwargs):
        opened.append(Path(file).name)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(text, "open", recording_open, raising=False)  # the reader's open only
    for split in ("train", "val", "test"):
        opened.clear()
        dataset = TextTask(split, data_dir=root, val_fraction=0.5)
        assert sorted(opened) == sorted(path.name for path in dataset.paths), split


def test_surrounding_whitespace_is_stripped_before_the_cut(tmp_path):
    """As TFDS reads a review (strip, LRA then cuts): for every cut, also one inside the trailing
    whitespace or past the end, and with truncate=False the stripped length is what counts."""
    root = write_acl_imdb(tmp_path)
    path = root / "test" / "pos" / "0_10.txt"
    path.write_bytes(b" \n\t Best of\n the  year. \r\n\n  ")
    stripped = path.read_bytes().strip()
    for max_len in range(1, len(stripped) + 4):
        tokens, _ = TextTask("test", data_dir=root, max_len=max_len)[-1]
        assert bytes((tokens[1:] - NUM_SPECIAL).tolist()) == stripped[: max_len - 1], max_len
    exact = TextTask("test", data_dir=root, max_len=len(stripped) + 1, truncate=False)
    assert bytes((exact[-1][0][1:] - NUM_SPECIAL).tolist()) == stripped


@settings(max_examples=200, deadline=None)
@given(
    segments=st.lists(st.tuples(st.booleans(), st.integers(0, 12)), max_size=8),
    limit=st.one_of(st.none(), st.integers(0, 40)),
)
def test_reading_in_small_blocks_gives_the_stripped_cut(tmp_path_factory, segments, limit):
    # Blocks of limit + 1 bytes (READ_BLOCK = 1) run every branch of the reader: leading
    # whitespace, a cut inside text or inside trailing whitespace, text after a whitespace run.
    data = b"".join(
        (b"ab\xc3\xa9" if word else b" \t\n\r\x0b\x0c")[: 1 + size % 4] * size
        for word, size in segments
    )
    path = tmp_path_factory.mktemp("review") / "0_1.txt"
    path.write_bytes(data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(text, "READ_BLOCK", 1)
        assert text._read(path, limit) == data.strip()[:limit]
