"""Operators are set operations on edges; presets, repr, parsing, hashing and caching."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from graphdiff.patterns import (
    BlockRandom,
    BlockWindow,
    Full,
    Global,
    Pattern,
    Random,
    Strided,
    Window,
    bigbird,
    diffuser,
    longformer,
    parse_pattern,
    sparse_transformer,
)


def edge_set(pattern, n, self_loops=True):
    return set(map(tuple, pattern(n, self_loops).t().tolist()))


blocks = st.one_of(
    st.builds(Window, st.integers(0, 12), st.integers(1, 3)),
    st.builds(BlockWindow, st.integers(2, 12)),
    st.builds(lambda k, last: Global(k, last=last), st.integers(0, 2), st.integers(0, 2)),
    st.builds(Random, st.integers(0, 5), st.integers(0, 3)),
    st.builds(BlockRandom, st.integers(1, 4), st.integers(0, 2), st.integers(0, 3)),
    st.builds(Strided, st.integers(1, 5)),
)


@settings(max_examples=60, deadline=None)
@given(p=blocks, q=blocks, n=st.integers(2, 30), self_loops=st.booleans())
def test_operators_are_set_operations(p, q, n, self_loops):
    ps, qs = edge_set(p, n, self_loops), edge_set(q, n, self_loops)
    assert edge_set(p | q, n, self_loops) == ps | qs
    assert edge_set(p & q, n, self_loops) == ps & qs
    assert edge_set(p.causal(), n, self_loops) == {(j, i) for j, i in ps if j <= i}
    assert edge_set(p.symmetric(), n, self_loops) == ps | {(i, j) for j, i in ps}
    loops = {(i, i) for i in range(n)}
    assert (loops <= ps) if self_loops else not (loops & ps)


@settings(max_examples=40, deadline=None)
@given(p=blocks, q=blocks, r=blocks)
def test_repr_reads_like_the_expression(p, q, r):
    for pattern in [
        p,
        p | q,
        p & q,
        (p | q) & r,
        p | (q & r),
        (p | q).causal(),
        (p & r).symmetric().causal(),
    ]:
        rebuilt = eval(repr(pattern))
        assert rebuilt == pattern and hash(rebuilt) == hash(pattern)
        assert parse_pattern(repr(pattern)) == pattern
        assert torch.equal(rebuilt(17), pattern(17))


def test_union_is_flat_and_hashable():
    p = Window(4) | Global(1) | Random(2)
    assert repr(p) == "Window(4) | Global(1) | Random(2, seed=0)"
    assert p == Window(4) | (Global(1) | Random(2))
    assert len({p, Window(4) | Global(1) | Random(2), Window(6)}) == 2
    assert Random(2, seed=0) != Random(2, seed=1)
    assert Window(4) != BlockWindow(4)


def test_cached_per_length_and_shared_between_equal_patterns():
    assert Window(8)(50) is Window(8)(50)
    assert Window(8)(50) is not Window(8)(51)
    assert Window(8)(50, self_loops=False).size(1) == Window(8)(50).size(1) - 50


def test_presets_compose_the_published_patterns():
    assert diffuser() == BlockWindow(64) | Global(64) | Random(64, seed=0)
    assert longformer() == Window(512) | Global(indices=[0])
    assert sparse_transformer(16) == Strided(16)
    n, block = 1024, 64
    big = bigbird(block=block, num_random_blocks=3, num_global_blocks=2)
    dense = big.to_dense(n)
    assert dense[:block].all() and dense[-block:].all()  # first and last blocks are global
    assert dense[:, :block].all() and dense[:, -block:].all()
    # An interior query block: its own + 2 neighbour blocks, 3 random blocks, 2 global blocks.
    row = dense[5 * block]
    assert row.sum() <= (3 + 3 + 2) * block


@pytest.mark.parametrize("n", [1, 2, 5, 8, 9])
def test_presets_work_on_sequences_shorter_than_their_global_part(n):
    # Every token is global when the sequence is shorter than the global tokens: full attention.
    assert torch.equal(diffuser(window=4, num_global=8)(n), Full()(n))
    assert torch.equal(
        bigbird(block=2, num_global_blocks=4)(n), Full()(n) if n <= 8 else bigbird(2, 3, 4)(n)
    )


def test_parse_pattern_names_and_errors():
    assert parse_pattern("diffuser") == diffuser()
    assert parse_pattern("diffuser(window=32, num_global=2)") == diffuser(window=32, num_global=2)
    assert parse_pattern("(Window(8) | Global(1)).causal()") == (Window(8) | Global(1)).causal()
    with pytest.raises(ValueError, match="unknown name 'Foo'.*Valid names: Window"):
        parse_pattern("Window(8) | Foo(2)")
    with pytest.raises(ValueError, match="literals"):
        parse_pattern("Window(__import__('os'))")
    with pytest.raises(ValueError, match="only .causal"):
        parse_pattern("Window(8).to_dense()")
    with pytest.raises(ValueError, match="cannot parse"):
        parse_pattern("Window(8) |")
    with pytest.raises(ValueError, match="invalid pattern"):
        parse_pattern("Window(8, bogus=1)")
    with pytest.raises(ValueError, match=r"not unpacked with \*\*"):
        parse_pattern("Random(3, **{'seed': 5})")
    with pytest.raises(ValueError, match="literals"):
        parse_pattern("Window({[1]: 2})")
    with pytest.raises(
        ValueError, match="invalid pattern 'Window'.*missing 1 required positional argument"
    ):
        parse_pattern("Window")


def test_nested_operations_flatten_to_one_value_with_one_repr():
    a, b, c = Window(3), Global(1), Random(1)
    assert (a & b) & c == a & (b & c) and hash((a & b) & c) == hash(a & (b & c))
    assert (a | b) | c == a | (b | c)
    for pattern in (a & (b & c), a | (b | c), (a | b) & c, a | (b & c)):
        assert parse_pattern(repr(pattern)) == pattern


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: Window(-1), ValueError, "size must be >= 0, got -1"),
        (lambda: Window(2.5), TypeError, "size must be an integer"),
        (lambda: Window(4, dilation=0), ValueError, "dilation"),
        (lambda: BlockWindow(1), ValueError, "size must be >= 2, got 1"),
        (lambda: Random(-2), ValueError, "num"),
        (lambda: Random(2, seed=-1), ValueError, "seed"),
        (lambda: Random(True), TypeError, "num"),
        (lambda: Strided(0), ValueError, "stride"),
        (lambda: BlockRandom(0, 1), ValueError, "block"),
        (lambda: Global(), ValueError, "exactly one of num or indices"),
        (lambda: Global(2, indices=[0]), ValueError, "exactly one"),
        (lambda: Global(indices=[0.5]), TypeError, "indices"),
        (lambda: Global(indices=[0], last=1), ValueError, "with num, not with indices"),
        (lambda: Global(indices=5), TypeError, "sequence of integers"),
        (lambda: Global(indices=[2**70]), ValueError, r"Global indices\[0\] must be in"),
        (lambda: Random(1, seed=2**64), ValueError, "seed must be in"),
        (lambda: BlockRandom(2, 1, seed=-1), ValueError, "seed"),
        (lambda: Global(1, last=-1), ValueError, "last must be >= 0"),
        (lambda: Global(indices=[5])(5), ValueError, "indices must lie in"),
        (lambda: Window(3)(0), ValueError, "n must be >= 1, got 0"),
        (lambda: Window(3)(4.0), TypeError, "n must be an integer"),
        (lambda: Full()(100_000), ValueError, "edges"),
        (lambda: Window(3).to_dense(10_000), ValueError, "to_dense refuses n=10000"),
        (lambda: Window(3) | 5, TypeError, "can only combine patterns"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_base_pattern_is_abstract():
    with pytest.raises(NotImplementedError):
        Pattern()(3)


def test_structure_cache_is_bounded_by_bytes_and_evicts_least_recently_used():
    from graphdiff.cache import StructureCache

    cache = StructureCache(max_bytes=3 * 2 * 8 * 10)  # room for three 10-edge graphs
    window = Window(0)  # self-loops only: n edges

    def get(pattern, n):
        return cache.get((pattern, n), lambda: pattern(n).clone())

    first = get(window, 10)
    get(Window(0), 10)
    assert get(Window(0), 10) is first  # equal patterns share entries
    get(window, 9)
    get(window, 8)
    get(window, 10)  # touch 10: now 9 is the least recently used
    get(window, 7)
    assert [key[1] for key in cache.entries] == [8, 10, 7]
    assert cache.bytes == (8 + 10 + 7) * 2 * 8
    assert get(window, 100).size(1) == 100 and (window, 100) not in cache.entries  # too big
    assert [key[1] for key in cache.entries] == [8, 10, 7]  # and it evicted nothing
    # Tuples of tensors count every member.
    pair = cache.get("pair", lambda: (torch.zeros(10, dtype=torch.long), torch.zeros(10)))
    assert isinstance(pair, tuple) and cache.bytes == (10 + 7) * 2 * 8 + 10 * 8 + 10 * 4


def test_editing_a_returned_edge_index_in_place_never_reaches_later_calls(fresh_cache):
    from torch_geometric.data import Data

    from graphdiff.data import AddPattern, graph_batch, sequence_graph

    CACHE = fresh_cache  # holds only this test's pattern tensors

    pattern = Window(3) | Global(indices=[-1])
    clean = pattern(7).clone()
    pattern(7)[0, 0] = 5
    assert torch.equal(pattern(7), clean)
    pattern(7).resize_(2, 1)  # shrunk in place: the cache's byte count follows what it holds
    pattern(7)
    held = [
        entry.value if isinstance(entry.value, tuple) else (entry.value,)
        for entry in CACHE.entries.values()
    ]
    assert CACHE.bytes - 256 * len(CACHE.remembered) == sum(
        t.numel() * t.element_size() for tensors in held for t in tensors
    )
    pattern.to_data(7).edge_index.add_(1)
    sequence_graph(torch.arange(7), pattern).edge_index.zero_()
    AddPattern(pattern)(Data(x=torch.arange(7))).edge_index.mul_(2)
    assert torch.equal(pattern(7), clean)
    assert pattern(7) is pattern(7)  # still cached once clean

    tokens, lengths = torch.zeros(2, 7, dtype=torch.long), torch.tensor([7, 5])
    expected = graph_batch(tokens, lengths, pattern).edge_index.clone()
    graph_batch(tokens, lengths, pattern).edge_index.add_(1)
    assert torch.equal(graph_batch(tokens, lengths, pattern).edge_index, expected)
