"""Custom patterns from every source, and conversions that round-trip."""

import networkx as nx
import numpy as np
import pytest
import scipy.sparse
import torch
from torch_geometric import EdgeIndex
from torch_geometric.data import Data

from graphdiff.patterns import Custom, Global, Random, Window, check_edge_index, diffuser

PATTERN = Window(6) | Global(1) | Random(2, seed=5)
N = 23


def test_custom_from_edge_index_numpy_mask_networkx_and_callable_agree():
    edge_index = PATTERN(N)
    dense = PATTERN.to_dense(N)
    sources = [
        edge_index,
        edge_index.numpy(),
        edge_index.int(),
        dense,
        dense.numpy(),
        PATTERN.to_networkx(N),
        lambda n: PATTERN(n),
    ]
    for source in sources:
        assert torch.equal(Custom(source)(N), edge_index), type(source)


def test_custom_undirected_networkx_goes_both_ways_and_canonicalises():
    graph = nx.path_graph(4)
    expected = {(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2)} | {(i, i) for i in range(4)}
    assert set(map(tuple, Custom(graph)(4).t().tolist())) == expected
    messy = torch.tensor([[3, 0, 3, 1], [0, 2, 0, 1]])  # unsorted, duplicate, self-loop
    assert Custom(messy)(4, self_loops=False).tolist() == [[3, 0], [0, 2]]


def test_custom_copies_its_input_and_hashes_by_content():
    edge_index = torch.tensor([[0, 1], [1, 0]])
    pattern = Custom(edge_index)
    assert pattern == Custom(edge_index.clone()) and hash(pattern) == hash(
        Custom(edge_index.clone())
    )
    edge_index[0, 0] = 1
    assert pattern(2, self_loops=False).tolist() == [[1, 0], [0, 1]]
    assert pattern != Custom(edge_index)


@pytest.mark.parametrize(
    "source, error, match",
    [
        (torch.tensor([[0.0, 1.0], [1.0, 0.0]]), TypeError, "integer dtype"),
        (torch.tensor([0, 1, 2]), ValueError, r"shape \[2, E\]"),
        (torch.zeros(3, 4, dtype=torch.long), ValueError, r"shape \[2, E\]"),
        (torch.tensor([[0, -1], [1, 0]]), ValueError, ">= 0"),
        (torch.ones(2, 3, dtype=torch.bool), ValueError, "square"),
        (nx.relabel_nodes(nx.path_graph(2), {0: "a", 1: "b"}), TypeError, "integer nodes"),
        (nx.DiGraph([(-1, 0)]), ValueError, "networkx graph's nodes' source indices must lie >= 0"),
        ("Window(3)", TypeError, "Custom needs"),
    ],
)
def test_custom_rejects_bad_input(source, error, match):
    with pytest.raises(error, match=match):
        Custom(source)


def test_custom_index_out_of_range_for_n():
    pattern = Custom(torch.tensor([[0, 7], [7, 0]]))
    assert pattern(8).size(1) == 8 + 2
    with pytest.raises(
        ValueError,
        match=r"edges' source indices must lie in \[0, 4\] "
        r"\(found range \[0, 7\]\)",
    ):
        pattern(5)
    with pytest.raises(TypeError, match="edges' must have an integer dtype"):
        Custom(lambda n: torch.zeros(2, 1))(3)


def test_check_edge_index_rejects_non_tensors():
    with pytest.raises(TypeError, match="'edge_index' must be a torch.Tensor"):
        check_edge_index([[0], [1]])


def test_conversions_round_trip():
    edge_index = PATTERN(N)
    # scipy: rows are queries (targets), columns keys (sources)
    matrix = PATTERN.to_scipy(N)
    assert isinstance(matrix, scipy.sparse.csr_matrix) and matrix.shape == (N, N)
    assert torch.equal(torch.from_numpy(matrix.toarray() > 0), PATTERN.to_dense(N))
    coo = matrix.tocoo()
    assert torch.equal(Custom(torch.from_numpy(np.stack([coo.col, coo.row])))(N), edge_index)
    # networkx: edge (j, i) for "i attends j"
    graph = PATTERN.to_networkx(N)
    assert graph.number_of_nodes() == N and graph.number_of_edges() == edge_index.size(1)
    assert torch.equal(Custom(graph)(N), edge_index)
    # PyG
    data = PATTERN.to_data(N)
    assert (
        isinstance(data, Data) and data.num_nodes == N and torch.equal(data.edge_index, edge_index)
    )
    ei = PATTERN.to_edge_index(N)
    assert isinstance(ei, EdgeIndex) and ei.sparse_size() == (N, N) and ei.is_sorted_by_col
    assert torch.equal(ei.as_tensor(), edge_index)
    # dense: row-major nonzeros are (query, key) pairs in canonical (target, source) order
    dense = PATTERN.to_dense(N)
    assert int(dense.sum()) == PATTERN.num_edges(N)
    assert torch.equal(dense.nonzero().flip(1).t(), edge_index)


def test_to_sparse_tensor_when_installed():
    torch_sparse = pytest.importorskip("torch_sparse")
    adj_t = PATTERN.to_sparse_tensor(N)
    assert isinstance(adj_t, torch_sparse.SparseTensor)
    assert torch.equal(adj_t.to_dense().bool(), PATTERN.to_dense(N))


def test_scale_is_vectorised_for_long_sequences():
    # 65,536 tokens of the paper's pattern: 16.5M edges, built without per-token loops.
    n = 65_536
    edge_index = diffuser()(n)
    degree = torch.bincount(edge_index[1], minlength=n)
    assert degree[:64].eq(n).all()  # global tokens attend everyone
    assert degree[64:].min() >= 64 + 64  # window block + random keys
