"""ListOps: generator labels checked by evaluators written independently of the module."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from graphdiff.tasks import CLS, NUM_SPECIAL, ListOps, ListOpsTSV, get_task
from graphdiff.tasks.listops import (
    VOCAB,
    generate_tree,
    to_lra_source,
    to_tokens,
    tokenize,
    write_listops_tsv,
)

OPS = {
    "[MIN": min,
    "[MAX": max,
    "[MED": lambda args: int(np.median(args)),  # LRA's definition, verbatim
    "[SM": lambda args: sum(args) % 10,
}


def stack_eval(tokens):
    """Evaluate a prefix token list with an explicit stack; also return the operator depth."""
    frames, depth, result = [], 0, None
    for token in tokens:
        if token in OPS:
            frames.append([token])
            depth = max(depth, len(frames))
            continue
        if token == "]":
            op, *args = frames.pop()
            assert 2 <= len(args), "an operator needs at least two arguments"
            value = OPS[op](args)
        else:
            value = int(token)
        if frames:
            frames[-1].append(value)
        else:
            assert result is None, "more than one top-level expression"
            result = value
    assert not frames and result is not None
    return result, depth


def lra_value(source):
    """LRA's binarised evaluation (to_value) on the parenthesised source, parsed from text."""
    stack = [[]]
    for token in source.split():
        if token == "(":
            stack.append([])
        elif token == ")":
            left, right = stack.pop()
            stack[-1].append((left, right))
        else:
            stack[-1].append(token)

    def value(t):
        if not isinstance(t, tuple):
            return t if t in OPS or t == "]" else int(t)
        left, right = value(t[0]), value(t[1])
        if isinstance(left, str):  # an operator: start its argument list
            return (left, [right])
        if right == "]":
            return OPS[left[0]](left[1])
        return (left[0], left[1] + [right])

    (tree,) = stack[0]
    return value(tree)


def ids_to_tokens(ids):
    return [VOCAB[i - NUM_SPECIAL] for i in ids]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    max_depth=st.integers(2, 6),
    max_args=st.integers(2, 5),
    min_length=st.integers(1, 30),
    extra=st.integers(0, 40),
)
def test_generated_trees_match_independent_evaluators(seed, max_depth, max_args, min_length, extra):
    max_length = min_length + extra
    rng = np.random.default_rng(seed)
    try:
        tree = generate_tree(rng, max_depth, max_args, min_length, max_length)
    except ValueError:  # window out of reach of this depth and arity: checked elsewhere
        return
    tokens = to_tokens(tree)
    value, depth = stack_eval(tokens)
    assert min_length <= len(tokens) <= max_length
    assert depth <= max_depth - 1  # the root is depth 1; depth max_depth holds digits only
    assert lra_value(to_lra_source(tree)) == value
    assert tokenize(to_lra_source(tree)) == tokens
    args_per_op = [len(a) for a in _operator_args(tree)]
    assert all(2 <= n <= max_args for n in args_per_op)


def _operator_args(tree):
    if isinstance(tree, int):
        return []
    _, args = tree
    return [args] + [a for arg in args for a in _operator_args(arg)]


def test_dataset_labels_and_lra_lengths():
    ds = ListOps("test", num_samples=3, seed=7)
    assert (ds.vocab_size, ds.num_classes, ds.max_len) == (17, 10, 2000)
    for i in range(3):
        tokens, label = ds[i]
        assert tokens[0] == CLS and 502 <= len(tokens) <= 2000  # 501..1999 plus CLS
        assert stack_eval(ids_to_tokens(tokens[1:].tolist()))[0] == label


def test_generator_is_reproducible_and_splits_differ():
    kwargs = dict(num_samples=2, max_depth=5, max_args=4, min_length=10, max_length=60)
    a, b = ListOps("train", **kwargs), ListOps("train", **kwargs)
    assert torch.equal(a[1][0], b[1][0]) and a[1][1] == b[1][1]
    assert not torch.equal(a[1][0], ListOps("val", **kwargs)[1][0])
    assert not torch.equal(a[1][0], ListOps("train", seed=1, **kwargs)[1][0])


def test_lra_source_format():
    assert to_lra_source(("[MAX", [2, 9])) == "( ( ( [MAX 2 ) 9 ) ] )"
    assert to_lra_source(("[SM", [1, ("[MIN", [3, 4])])) == (
        "( ( ( [SM 1 ) ( ( ( [MIN 3 ) 4 ) ] ) ) ] )"
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_depth=2, max_args=3, min_length=6), "exceeds the longest tree"),
        (dict(max_args=1), "max_args must be >= 2"),
        (dict(min_length=50, max_length=40), "max_length must be >= 50"),
        (dict(max_length=1999, max_len=1000), "exceeds max_len=1000"),
    ],
)
def test_generator_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ListOps("train", **kwargs)


def test_tsv_round_trip_matches_generator(tmp_path):
    ds = ListOps("val", num_samples=4, max_depth=5, max_args=5, min_length=5, max_length=80)
    write_listops_tsv(tmp_path / "basic_val.tsv", (ds.tree(i) for i in range(len(ds))))
    read = get_task("listops", "val", data_dir=tmp_path)
    assert isinstance(read, ListOpsTSV) and len(read) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["basic_val.tsv"]  # no temp file left
    for i in range(4):
        assert torch.equal(read[i][0], ds[i][0]) and read[i][1] == ds[i][1]


def _write(path, text):
    path.write_bytes(text.encode("utf-8", "surrogateescape"))  # \udcff becomes the byte 0xff
    return path


def test_tsv_reader_accepts_crlf_and_lra_lines(tmp_path):
    _write(
        tmp_path / "basic_train.tsv",
        "Source\tTarget\r\n( ( ( [MAX 2 ) 9 ) ] )\t9\r\n( ( ( [SM 5 ) 7 ) ] )\t2\r\n",
    )
    ds = ListOpsTSV("train", tmp_path)
    assert ids_to_tokens(ds[0][0][1:].tolist()) == ["[MAX", "2", "9", "]"]
    assert [ds[i][1] for i in range(2)] == [9, 2]


@pytest.mark.parametrize(
    "text, line, why",
    [
        ("Source\tTarget\n[MAX 1 2 ]\t2\n[MAX 1 2 ]\n", 3, "2 tab-separated fields"),
        ("Source\tTarget\n[MAX 1 2 ]\t2\textra\n", 2, "2 tab-separated fields"),
        ("Source\tTarget\n[MAX 1 2 ]\t2\n[FIRST 1 2 ]\t1\n", 3, "unknown ListOps token"),
        ("Source\tTarget\n[MAX 1 2 ]\t12\n", 2, "Target must be a digit"),
        ("Source\tTarget\n( )\t1\n", 2, "empty Source"),
        ("Src\tTgt\n[MAX 1 2 ]\t2\n", 1, "header"),
        ("", 1, "no 'Source<TAB>Target' header"),
        ("Source\tTarget\n", 2, "no examples after the header"),
        ("Source\tTarget\n[MAX 1 2 ]\t2\n[MAX 1 \udcff ]\t2\n", 3, "can't decode"),
    ],
)
def test_malformed_tsv_names_file_and_line(tmp_path, text, line, why):
    _write(tmp_path / "basic_test.tsv", text)
    with pytest.raises(ValueError, match=rf"basic_test\.tsv:{line}: malformed.*{why}"):
        ListOpsTSV("test", tmp_path)


def test_tsv_max_len_and_truncate(tmp_path):
    _write(tmp_path / "basic_test.tsv", "Source\tTarget\n[MAX 1 2 ]\t2\n[SM 1 2 3 4 ]\t0\n")
    with pytest.raises(ValueError, match=r"basic_test\.tsv:3: sequence of 7 tokens"):
        ListOpsTSV("test", tmp_path, max_len=6)
    tokens, _ = ListOpsTSV("test", tmp_path, max_len=6, truncate=True)[1]
    assert len(tokens) == 6 and tokens[0] == CLS


def test_missing_tsv_file(tmp_path):
    with pytest.raises(ValueError, match="no ListOps file"):
        get_task("listops", "train", data_dir=tmp_path)
