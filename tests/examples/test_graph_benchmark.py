"""examples/graph_benchmark.py: the Tree-NeighborsMatch generator against its definition, the
sampled hops a diffusion layer needs, and a --quick run that writes its tables and resumes."""

import importlib.util
import json
import os
import sys
from pathlib import Path

import networkx as nx
import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.utils import is_undirected

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "graph_benchmark.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("graph_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def preorder_tree(depth):
    """The paper's tree from networkx: a balanced binary tree renumbered depth-first (left
    child first); returns the edges (child, parent) and the leaves from left to right."""
    tree = nx.balanced_tree(2, depth)  # breadth-first ids: node k has children 2k+1, 2k+2
    order = {node: i for i, node in enumerate(nx.dfs_preorder_nodes(tree, 0))}
    edges = {(order[child], order[(child - 1) // 2]) for child in range(1, tree.number_of_nodes())}
    leaves = [order[k] for k in range(2**depth - 1, 2 ** (depth + 1) - 1)]
    return edges, leaves


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_binary_tree_is_the_papers_numbering_with_edges_toward_the_root(bench, depth):
    edge_index, leaves = bench.binary_tree(depth)
    edges, expected_leaves = preorder_tree(depth)
    assert sorted(map(tuple, edge_index.t().tolist())) == sorted(edges)
    assert leaves == expected_leaves
    if depth == 2:  # the paper's code, by hand: 0 -> (1, 4), 1 -> (2, 3), 4 -> (5, 6)
        assert leaves == [2, 3, 5, 6]
        assert set(map(tuple, edge_index.t().tolist())) == {
            (1, 0), (4, 0), (2, 1), (3, 1), (5, 4), (6, 4)
        }  # fmt: skip


@pytest.mark.parametrize("depth, num_examples", [(1, None), (2, None), (3, 40), (4, 20)])
def test_tree_label_is_the_value_of_the_leaf_holding_the_root_key(bench, depth, num_examples):
    graphs = bench.tree_neighbors_match(depth, num_examples, seed=1)
    n, m = 2 ** (depth + 1) - 1, 2**depth
    tree_edges, leaves = preorder_tree(depth)
    for g in graphs:
        assert g.x.shape == (n, 2 * m) and g.y.shape == (1,)
        assert g.root_mask.tolist() == [True] + [False] * (n - 1)
        pairs = list(map(tuple, g.edge_index.t().tolist()))
        assert {p for p in pairs if p[0] != p[1]} == tree_edges  # child -> parent only
        assert sorted(p[0] for p in pairs if p[0] == p[1]) == list(range(n))  # self-loops
        inner = [v for v in range(1, n) if v not in leaves]
        assert g.x[inner].abs().sum() == 0
        root = g.x[0]
        assert root[:m].sum() == 1 and root[m:].sum() == 0
        keys = g.x[leaves, :m].argmax(1)
        values = g.x[leaves, m:].argmax(1)
        assert g.x[leaves].sum(1).tolist() == [2.0] * m  # one key bit, one value bit
        assert keys.tolist() == list(range(m))  # leaf j (left to right) holds key j
        assert sorted(values.tolist()) == list(range(m))  # the values are a permutation
        assert g.y.item() == values[keys == root[:m].argmax()].item()


def test_tree_data_set_is_the_papers_and_deterministic(bench):
    full = bench.tree_neighbors_match(2)  # 4! permutations, every root key: 96 examples
    assert len(full) == 96
    pairs = {
        (tuple(g.x[[2, 3, 5, 6], 4:].argmax(1).tolist()), g.x[0, :4].argmax().item()) for g in full
    }
    assert len(pairs) == 96
    assert torch.bincount(torch.cat([g.y for g in full])).tolist() == [24] * 4
    drawn = bench.tree_neighbors_match(3, 50, seed=7)
    again = bench.tree_neighbors_match(3, 50, seed=7)
    other = bench.tree_neighbors_match(3, 50, seed=8)
    assert all(torch.equal(a.x, b.x) and torch.equal(a.y, b.y) for a, b in zip(drawn, again))
    assert not all(torch.equal(a.x, b.x) for a, b in zip(drawn, other))
    assert len({(g.x.numpy().tobytes()) for g in drawn}) == 50  # without replacement


@pytest.mark.parametrize(
    "depth, num_examples", [(0, None), (True, None), (11, None), (2, 0), (2, 97), (2, 1.5)]
)
def test_tree_generator_refuses_bad_arguments(bench, depth, num_examples):
    with pytest.raises(ValueError, match="depth|num_examples"):
        bench.tree_neighbors_match(depth, num_examples)


@pytest.mark.skipif(
    not any(importlib.util.find_spec(name) for name in ("pyg_lib", "torch_sparse")),
    reason="NeighborLoader needs pyg-lib or torch-sparse",
)
@pytest.mark.parametrize("model, hops", [("AD-dot", 2), ("AD-gat", 3), ("GATConv", 2)])
def test_neighbor_loader_needs_layers_times_hops_sampled_hops(bench, model, hops):
    from torch_geometric.loader import NeighborLoader

    # A cycle with chords: neighbourhoods keep growing for more hops than any model reaches.
    n = 60
    ring = torch.arange(n)
    src = torch.cat([ring, ring])
    dst = torch.cat([(ring + 1) % n, (ring + 7) % n])
    data = bench.add_self_loops_data(Data(x=torch.randn(n, 8), edge_index=torch.stack([src, dst])))
    spec = bench.MODELS[model]
    layers = 2
    torch.manual_seed(0)
    net = bench.Net(spec, 8, 16, 3, layers, hops, dropout=0.0).eval()
    needed = layers * (hops if spec.diffusion else 1)
    seeds = torch.tensor([0, 17, 33])
    with torch.no_grad():
        full = net(data.x, data.edge_index)[seeds]
        for sampled, exact in ((needed, True), (needed - 1, False)):
            batch = next(
                iter(NeighborLoader(data, [-1] * sampled, input_nodes=seeds, batch_size=3))
            )
            out = net(batch.x, batch.edge_index)[: batch.batch_size]
            assert torch.equal(batch.n_id[:3], seeds)
            assert torch.allclose(out, full, atol=1e-5) == exact


def test_community_graph_is_symmetric_and_homophilous(bench):
    data = bench.community_graph(3000, 5, num_classes=10, seed=0)
    assert is_undirected(data.edge_index)
    src, dst = data.edge_index
    assert 9.0 < src.numel() / 3000 <= 10.0  # 2 x 5 draws per node, up to collisions
    assert 0.75 < (data.y[src] == data.y[dst]).float().mean() < 0.85  # 80% + 20% / 10


def test_quick_benchmark_selects_on_the_first_seed_writes_tables_and_resumes(bench, tmp_path):
    argv = ["--quick", "--tasks", "tree2", "karate", "--models", "GCNConv", "AD-dot",
            "Block-gat+X", "--seeds", "0", "1", "--out", str(tmp_path)]  # fmt: skip
    summary = bench.main(argv)
    assert [(r["task"], r["model"]) for r in summary["rows"]] == [
        (task, model)
        for task in ("tree2", "karate")
        for model in ("GCNConv", "AD-dot", "Block-gat+X")
    ]
    for row in summary["rows"]:
        assert 0.0 <= row["test"] <= 1.0 and row["seeds"] == 2
        runs = [
            r for r in summary["runs"] if (r["task"], r["model"]) == (row["task"], row["model"])
        ]
        # The grid (learning rates 1e-3 and 5e-3, times dropout 0 and 0.5 on karate, 0 on
        # trees) on seed 0, the selection on seed 1.
        grid = 4 if row["task"] == "karate" else 2
        assert sorted(r["seed"] for r in runs) == [0] * grid + [1]
        best = max((r for r in runs if r["seed"] == 0), key=lambda r: r["val"])
        assert (row["lr"], row["dropout"]) == (best["lr"], best["dropout"])
        assert [(r["lr"], r["dropout"]) for r in runs if r["seed"] == 1] == [
            (best["lr"], best["dropout"])
        ]
    layers = {(r["task"], r["model"]): r["layers"] for r in summary["rows"]}
    assert layers["tree2", "GCNConv"] == 2 and layers["tree2", "AD-dot"] == 1  # ceil(2 / 5)
    table = (tmp_path / "results.md").read_text()
    assert "| Block-gat+X |" in table and "| chance | 25.0 |" in table
    assert "| root key alone |" in table
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == summary["rows"]
    record = tmp_path / "runs" / "karate" / "AD-dot" / "lr0.005_dropout0.5" / "seed0.json"
    stamp = os.stat(record).st_mtime_ns
    again = bench.main(argv)  # every run is recorded: nothing trains again
    assert os.stat(record).st_mtime_ns == stamp
    assert again["rows"] == summary["rows"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seeds", "0", "0"], "--seeds must be distinct"),
        (["--dropouts", "1.0"], "--dropouts must be in [0, 1)"),
        (["--hidden", "30"], "--hidden must be a multiple of 4"),
        (["--hops", "0"], "must be >= 1"),
    ],
)
def test_bad_arguments_are_usage_errors(bench, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--quick", *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(
    not any(importlib.util.find_spec(name) for name in ("pyg_lib", "torch_sparse")),
    reason="NeighborLoader needs pyg-lib or torch-sparse",
)
def test_scale_worker_samples_layers_times_hops(bench):
    threads = torch.get_num_threads()
    settings = dict(nodes=300, degree_out=3, hidden=8, hops=3, fanout=2, batch_size=16, epochs=1)
    try:
        full = bench.scale_worker({**settings, "model": "AD-dot", "mode": "full", "threads": 1})
        assert (full["layers"], full["sampled_hops"], full["nodes_per_batch"]) == (1, 3, 300)
        # GATConv: 2 layers, 2 sampled hops; AD-dot: 1 layer of 3 hops, 3 sampled hops. At most
        # 16 seeds and fan-out 2 per hop: 16 (1 + 2 + 4) and 16 (1 + 2 + 4 + 8) nodes.
        for model, layers, hops, most in (("GATConv", 2, 2, 112), ("AD-dot", 1, 3, 240)):
            run = bench.scale_worker({**settings, "model": model, "mode": "neighbor", "threads": 1})
            assert (run["layers"], run["sampled_hops"]) == (layers, hops)
            assert 16 < run["nodes_per_batch"] <= most
            assert run["peak_rss_mb"] >= run["peak_rss_mb"] - run["extra_rss_mb"] > 0
    finally:
        torch.set_num_threads(threads)
