"""AddExpander: the permutation draw, its simple graph, virtual nodes, attributes, redraws and
errors, against Python sets, counts and networkx."""

import copy
import math
import warnings

import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader
from torch_geometric.data import Batch, Data, HeteroData
from torch_geometric.transforms import VirtualNode

from graphdiff.data import AddExpander
from graphdiff.data.expander import _permutation_edges

INPUT, EXPANDER, VIRTUAL_IN, VIRTUAL_OUT = (
    AddExpander.INPUT_EDGE,
    AddExpander.EXPANDER_EDGE,
    AddExpander.VIRTUAL_IN_EDGE,
    AddExpander.VIRTUAL_OUT_EDGE,
)


@st.composite
def graphs(draw):
    """A random small graph with a random subset of the usual attributes."""
    n = draw(st.integers(3, 12))
    num_edges = draw(st.integers(0, 25))
    pairs = st.lists(st.integers(0, n - 1), min_size=num_edges, max_size=num_edges)
    data = Data(edge_index=torch.tensor([draw(pairs), draw(pairs)], dtype=torch.long).view(2, -1))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    if draw(st.booleans()):
        data.x = torch.randn(n, 3, generator=generator)
    else:
        data.num_nodes = n
    if draw(st.booleans()):
        data.edge_attr = torch.randn(num_edges, 2, generator=generator)
    if draw(st.booleans()):
        data.edge_weight = torch.rand(num_edges, generator=generator)
    if draw(st.booleans()):
        data.y = torch.randint(0, 5, (n,), generator=generator)
        data.train_mask = torch.rand(n, generator=generator) < 0.5
    return data


def edge_set(edge_index):
    return set(map(tuple, edge_index.t().tolist()))


def reference_simple(multigraph):
    """The simple graph by Python sets: no self-loops, each (j, i) once, sorted by (i, j)."""
    pairs = {(j, i) for j, i in multigraph.t().tolist() if i != j}
    return (
        torch.tensor(sorted(pairs, key=lambda ji: (ji[1], ji[0])), dtype=torch.long).view(-1, 2).t()
    )


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), degree=st.integers(1, 6), seed=st.integers(0, 2**31))
def test_permutation_draw_is_2d_regular_with_multiplicity(n, degree, seed):
    edges = _permutation_edges(n, degree, torch.Generator().manual_seed(seed))
    assert edges.shape == (2, 2 * degree * n)
    # Every node: exactly 2d out- and 2d in-edges, self-loops and repeats counted.
    assert torch.equal(torch.bincount(edges[0], minlength=n), torch.full((n,), 2 * degree))
    assert torch.equal(torch.bincount(edges[1], minlength=n), torch.full((n,), 2 * degree))
    # Each of the d forward blocks is i -> pi_k(i) for a permutation pi_k; the rest reverses them.
    forward = edges[:, : degree * n].view(2, degree, n)
    assert torch.equal(forward[0], torch.arange(n).expand(degree, n))
    assert torch.equal(forward[1].sort(dim=1).values, torch.arange(n).expand(degree, n))
    assert torch.equal(edges[:, degree * n :], edges[:, : degree * n].flip(0))


@settings(max_examples=60, deadline=None)
@given(data=graphs(), degree=st.integers(1, 4), virtual=st.integers(0, 3), seed=st.integers(0, 99))
def test_structure(data, degree, virtual, seed):
    n, e = data.num_nodes, data.edge_index.size(1)
    original = copy.copy(data)
    out = AddExpander(degree, virtual_nodes=virtual, seed=seed, max_tries=1)(data)
    # The input is left as it was.
    assert all(data[key] is original[key] for key in original.keys())
    assert "edge_type" not in data

    assert out.num_nodes == n + virtual
    assert torch.equal(out.virtual_mask, torch.arange(n + virtual) >= n)
    edge_type = out.edge_type
    assert edge_type.dtype == torch.long and edge_type.shape == (out.edge_index.size(1),)
    # Input edges first, exactly; then the expander; then the virtual edges.
    assert torch.equal(out.edge_index[:, :e], data.edge_index)
    assert torch.equal(edge_type, edge_type.sort().values) and (edge_type[:e] == INPUT).all()

    # The expander: the simple graph of the same generator's draw, symmetric, degree <= 2d.
    expander = out.edge_index[:, edge_type == EXPANDER]
    draw = _permutation_edges(n, degree, torch.Generator().manual_seed(seed))
    assert torch.equal(expander, reference_simple(draw))
    assert edge_set(expander) == edge_set(expander.flip(0))
    assert int(torch.bincount(expander[1], minlength=n).max()) <= min(2 * degree, n - 1)

    # Virtual nodes: every real node into and out of each, once; nothing else touches them.
    into, out_of = (out.edge_index[:, edge_type == kind] for kind in (VIRTUAL_IN, VIRTUAL_OUT))
    expected_in = {(i, n + k) for k in range(virtual) for i in range(n)}
    assert edge_set(into) == expected_in and into.size(1) == n * virtual
    assert torch.equal(out_of, into.flip(0))
    assert (out.edge_index[:, edge_type < VIRTUAL_IN] < n).all()

    # Attributes: the originals first, zeros (ones for edge_weight) for what is new.
    new_edges = out.edge_index.size(1) - e
    for key, fill, extra in (
        ("x", 0.0, virtual),
        ("y", 0, virtual),
        ("train_mask", False, virtual),
        ("edge_attr", 0.0, new_edges),
        ("edge_weight", 1.0, new_edges),
    ):
        if key in data:
            value = out[key]
            assert torch.equal(value[: data[key].size(0)], data[key])
            assert value.size(0) == data[key].size(0) + extra
            assert (value[data[key].size(0) :] == fill).all()
            assert value.dtype == data[key].dtype


def test_the_path_gains_its_expander():
    """A hand-checked case: on 5 nodes with seed 0, networkx sees the union of the path, the
    expander and the virtual node's star."""
    n = 5
    path = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    out = AddExpander(2, virtual_nodes=1, seed=0, max_tries=1)(Data(edge_index=path, num_nodes=n))
    expander = out.edge_index[:, out.edge_type == EXPANDER]
    graph = nx.Graph(expander.t().tolist())
    graph.add_edges_from(path.t().tolist())
    graph.add_edges_from((i, n) for i in range(n))
    expected = nx.Graph(out.edge_index.t().tolist())
    assert nx.utils.graphs_equal(graph, expected)
    assert expected.degree[n] == n


def test_one_virtual_node_is_pygs_virtual_node():
    # PyG's VirtualNode after the expander: the same edges, edge types (it numbers into and
    # out of the virtual node after the types present), features and edge attributes.
    n = 8
    data = ring(n, edge_attr=torch.randn(n, 3), edge_weight=torch.rand(n))
    out = AddExpander(2, virtual_nodes=1, seed=5, max_tries=1)(data)
    expected = VirtualNode()(AddExpander(2, seed=5, max_tries=1)(data))
    for key in ("edge_index", "edge_type", "x", "edge_attr", "edge_weight"):
        assert torch.equal(out[key], expected[key]), key
    assert out.num_nodes == expected.num_nodes == n + 1


def test_labels_of_their_own_index_graph_level_and_index_attributes_are_left_alone():
    n = 6  # a ring: as many nodes as edges
    data = Data(
        x=torch.randn(n, 2),
        edge_index=torch.tensor([[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 0]]),
        y=torch.tensor([1.5]),  # graph label
        edge_label_index=torch.tensor([[0, 2, 4, 1, 3, 5], [3, 5, 1, 4, 0, 2]]),  # [2, E]
        edge_label=torch.ones(6),  # labels of edge_label_index's pairs, E of them
        pair_label_index=torch.tensor([[0, 1, 2, 3, 4, 5], [2, 3, 4, 5, 0, 1]]),
        pair_label=torch.arange(6),
        name="ring",
    )
    out = AddExpander(2, virtual_nodes=1, seed=3)(data)
    for key in ("y", "edge_label_index", "edge_label", "pair_label_index", "pair_label", "name"):
        assert out[key] is data[key], key
    assert out.x.size(0) == n + 1


def test_node_or_edge_level():
    # N != E: PyG's is_node_attr / is_edge_attr decide by the size, whatever the key.
    n = 6
    data = ring(n, score=torch.randn(n), weights=torch.randn(2 * n, 2), other=torch.ones(5))
    data.edge_index = torch.cat([data.edge_index, data.edge_index.flip(0)], dim=1)
    out = AddExpander(2, virtual_nodes=1, seed=3)(data)
    e = out.edge_index.size(1)
    assert out.score.shape == (n + 1,) and out.weights.shape == (e, 2)
    assert out.other is data.other
    # N == E: by the key where it says the level; anything else is an error, before any work.
    data = ring(
        n,
        edge_score=torch.randn(n),
        train_mask=torch.rand(n) < 0.5,
        node_score=torch.randn(n),
        y=torch.arange(n),
    )
    out = AddExpander(2, virtual_nodes=1, seed=3)(data)
    e = out.edge_index.size(1)
    assert out.edge_score.shape == (e,)
    assert out.train_mask.shape == out.node_score.shape == out.y.shape == (n + 1,)
    transform = AddExpander(2, virtual_nodes=1, seed=3)
    with pytest.raises(ValueError, match="data.weights has 6 rows.*node- or edge-level"):
        transform(ring(n, weights=torch.randn(n)))
    assert torch.equal(transform.expander(n), AddExpander(2, seed=3).expander(n))  # no draw yet


def test_batching_after_the_transform():
    transform = AddExpander(2, virtual_nodes=2, seed=1)
    graphs = [
        transform(Data(x=torch.randn(n, 4), edge_index=torch.tensor([[0], [1]]))) for n in (3, 7)
    ]
    batch = Batch.from_data_list(graphs)
    assert batch.num_nodes == 3 + 2 + 7 + 2
    assert torch.equal(batch.virtual_mask, torch.cat([g.virtual_mask for g in graphs]))
    assert torch.equal(batch.edge_type, torch.cat([g.edge_type for g in graphs]))
    assert torch.equal(batch.edge_index[:, graphs[0].num_edges :], graphs[1].edge_index + 5)


class Repeated(torch.utils.data.Dataset):
    """The same graph ``length`` times, through ``transform``."""

    def __init__(self, data, transform, length):
        self.data, self.transform, self.length = data, transform, length

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        return self.transform(self.data)


def test_dataloader_workers_draw_differently_and_reproducibly():
    data = Data(num_nodes=30, edge_index=torch.empty(2, 0, dtype=torch.long))
    dataset = Repeated(data, AddExpander(3, seed=7), 4)

    def loader(seed):
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(dataset, batch_size=None, num_workers=2, generator=generator)

    def draws(loader):
        return [graph.edge_index for graph in loader]

    first = draws(loader(0))  # items 0, 2 by worker 0; 1, 3 by worker 1
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[2], first[3])
    again = loader(0)
    assert all(torch.equal(a, b) for a, b in zip(first, draws(again)))
    # A new epoch (new workers, new torch seeds) draws anew.
    assert not any(torch.equal(a, b) for a, b in zip(first, draws(again)))


def test_determinism():
    data = Data(x=torch.randn(30, 2), edge_index=torch.empty(2, 0, dtype=torch.long))

    def run(transform, count=3):
        return [transform(data).edge_index for _ in range(count)]

    first, again = run(AddExpander(3, seed=7)), run(AddExpander(3, seed=7))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    # The generator is seeded once: successive graphs get different draws.
    assert not torch.equal(first[0], first[1])
    assert not torch.equal(first[0], run(AddExpander(3, seed=8), 1)[0])
    # seed=None draws from torch's global generator.
    torch.manual_seed(11)
    unseeded = run(AddExpander(3))
    torch.manual_seed(11)
    assert all(torch.equal(a, b) for a, b in zip(unseeded, run(AddExpander(3))))


def gap_reference(edges, n):
    """(components, lambda_2 of the normalised Laplacian) by networkx, 0 when disconnected."""
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from(edges.t().tolist())
    components = nx.number_connected_components(graph)
    if components > 1:
        return components, 0.0
    return 1, float(np.sort(nx.normalized_laplacian_spectrum(graph))[1])


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(3, 9),
    degree=st.integers(1, 3),
    tolerance=st.sampled_from([None, 0.1, -0.3, -5.0]),
    max_tries=st.integers(2, 6),
    seed=st.integers(0, 2**31),
)
def test_redraws_keep_the_first_accepted_draw_or_the_best(n, degree, tolerance, max_tries, seed):
    checked = AddExpander(degree, seed=seed, max_tries=max_tries, tolerance=tolerance)
    # A single-draw transform with the same seed yields the same sequence of draws.
    single = AddExpander(degree, seed=seed, max_tries=1)
    draws = [single.expander(n) for _ in range(max_tries)]
    scores = [gap_reference(edges, n) for edges in draws]
    accepted = [c == 1 and gap >= checked.min_gap - 1e-9 for c, gap in scores]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = checked.expander(n)
    if any(accepted):
        assert torch.equal(result, draws[accepted.index(True)])
        assert not caught
    else:
        best = max((-c, gap) for c, gap in scores)
        kept = scores[[i for i, d in enumerate(draws) if torch.equal(d, result)][0]]
        assert (-kept[0], kept[1]) == pytest.approx(best)
        assert len(caught) == 1 and f"none of max_tries={max_tries} draws" in str(caught[0].message)


def test_failed_redraws_warn_with_what_they_reached():
    # d = 1 on 40 nodes: connected only when the permutation is one cycle (1 in 40).
    with pytest.warns(UserWarning, match=r"none of max_tries=2 draws on 40 nodes.*with \d+ conn"):
        AddExpander(1, seed=0, max_tries=2).expander(40)
    # A gap above 1 is out of reach: the best connected draw, with its gap.
    transform = AddExpander(2, seed=0, max_tries=3, tolerance=-5.0)
    with pytest.warns(UserWarning, match=r"gap of 0\.\d+ < min_gap = 1\.\d+"):
        transform(ring(9))


def test_min_gap_is_exphormers_threshold():
    # 2d-regular: lambda_2 = 1 - mu_2 / 2d, so mu_2 <= 2 sqrt(2d - 1) + 0.1 reads as this.
    assert AddExpander(3, tolerance=0.1).min_gap == pytest.approx(1 - (2 * math.sqrt(5) + 0.1) / 6)
    assert AddExpander(3).min_gap == 0.0


def test_redraws_fix_small_disconnected_draws():
    # d = 2 on 5 nodes: about a fifth of single draws are disconnected; ten tries fix them all.
    single, checked = AddExpander(2, seed=0, max_tries=1), AddExpander(2, seed=0, tolerance=0.1)
    singles = [gap_reference(single.expander(5), 5)[0] for _ in range(200)]
    assert sum(c > 1 for c in singles) > 10
    for _ in range(200):
        components, gap = gap_reference(checked.expander(5), 5)
        assert components == 1 and gap >= checked.min_gap


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"degree": 0}, ValueError, "degree must be >= 1"),
        ({"degree": 1.5}, TypeError, "degree must be an integer"),
        ({"degree": True}, TypeError, "degree must be an integer"),
        ({"degree": 2, "virtual_nodes": -1}, ValueError, "virtual_nodes must be >= 0"),
        ({"degree": 2, "seed": -1}, ValueError, "seed must be in"),
        ({"degree": 2, "max_tries": 0}, ValueError, "max_tries must be >= 1"),
        ({"degree": 2, "tolerance": "0.1"}, TypeError, "tolerance must be a real"),
        ({"degree": 2, "tolerance": math.nan}, ValueError, "tolerance must be finite"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        AddExpander(**kwargs)


def ring(n=5, **attrs):
    edge_index = torch.stack([torch.arange(n), (torch.arange(n) + 1) % n])
    return Data(x=torch.randn(n, 2), edge_index=edge_index, **attrs)


@pytest.mark.parametrize(
    "data, error, match",
    [
        (ring(2), ValueError, "at least 3 nodes, got 2"),
        (Data(x=torch.randn(4, 2)), ValueError, "needs data.edge_index"),
        (Batch.from_data_list([ring(), ring()]), TypeError, "one graph.*got a Batch"),
        (HeteroData(), TypeError, "got HeteroData"),
        (ring(batch=torch.zeros(5, dtype=torch.long)), ValueError, "batch vector"),
        (ring(adj_t=torch.eye(5).to_sparse()), ValueError, "not a sparse 'adj_t'"),
        (ring(edge_type=torch.zeros(5, dtype=torch.long)), ValueError, "already has 'edge_type'"),
        (ring(edge_attr=torch.randn(4, 3)), ValueError, r"edge_attr must have one row per edge"),
        (ring(edge_weight=torch.ones(6)), ValueError, r"edge_weight must have one row per edge"),
        (ring(edge_weight=torch.tensor(1.0)), ValueError, r"edge_weight must have one row"),
        (ring(edge_attr=[1.0] * 5), TypeError, "edge_attr must be a tensor"),
        (Data(x=torch.randn(3, 1), edge_index=torch.tensor([[0], [5]])), ValueError, "indices"),
    ],
)
def test_bad_graphs(data, error, match):
    with pytest.raises(error, match=match):
        AddExpander(2, virtual_nodes=1)(data)


def test_applied_twice_is_an_error():
    transform = AddExpander(2, seed=0)
    with pytest.raises(ValueError, match="applied twice"):
        transform(transform(ring()))


def test_repr():
    assert repr(AddExpander(3)) == "AddExpander(3)"
    assert (
        repr(AddExpander(3, virtual_nodes=1, seed=0, max_tries=1, tolerance=0.1))
        == "AddExpander(3, virtual_nodes=1, seed=0, max_tries=1, tolerance=0.1)"
    )
