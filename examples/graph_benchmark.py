"""Graph benchmark: AttentionDiffusion against PyG's convolutions on tasks of reach and homophily.

Protocol (results and discussion: docs/graphs.md). Every model is one backbone (a two-layer MLP
encoder, ``L`` graph layers of width ``--hidden``, a linear read-out) trained with Adam under
the same budget per task. Each point of a small grid (``--lrs`` x dropouts: 0 and 0.5 on node
tasks, 0 on trees) trains on the first seed; the point with the best validation accuracy is
selected and trains on the other seeds (5 seeds, unless ``--seeds``).
Node tasks train full batch for at most 150 epochs, stop after 25 without a better validation
accuracy and report the test accuracy at the best one. Trees (a fitting test, as in the paper)
train in batches of 32 for at most 100 epochs, stop once every training tree is fitted and
report the training and test accuracies at the epoch of best training accuracy. Tables give the
mean and sample standard deviation over seeds. The seed sets the initialisation, dropout and
batch order; the data sets are fixed.

Graph layers (``GCNConv``, ``GATConv``, ``GATv2Conv``, ``TransformerConv``, ``AD-*``:
``AttentionDiffusion``, ``APPNP``: a linear map then ``APPNP``) sit in a residual branch,
``x = LayerNorm(x + Dropout(ReLU(conv(x))))`` (the layer of Alon and Yahav's models);
``Block-*`` is ``graphdiff.nn.DiffusionBlock`` (pre-LayerNorm, with its own feed-forward
network) and ``GPSConv`` is PyG's GraphGPS layer (a ``GCNConv`` local conv and dense multi-head
attention within each graph), both with their own residuals. Attention layers have 4 heads.
``-dot`` and ``-gat`` name the one-hop score of ``AttentionDiffusion``; ``+X`` adds
``graphdiff.data.AddExpander(3, virtual_nodes=1)`` to every graph first (one draw per graph,
fixed). Diffusion layers (``AD-*``, ``Block-*``, ``APPNP``) take ``--hops`` K hops with teleport
0.1.

Layers. A task needs a reach of ``r`` hops: message passing gets ``L = r`` layers, a diffusion
layer reaches K hops, so it gets ``L = ceil(r / K)``.

Tasks:

- ``tree2`` .. ``tree6``: Tree-NeighborsMatch (Alon and Yahav, "On the Bottleneck of Graph
  Neural Networks and its Practical Implications", ICLR 2021), see
  :func:`tree_neighbors_match`; reach = depth; the root is read out.
- ``infection``: PyG's ``InfectionDataset`` on an Erdos-Renyi graph: a node's label is its
  distance to the nearest infected node, up to 4 (5: farther); reach 4.
- ``sbm``, ``karate``: the homophilous stochastic block model (noisy features, 20 labels per
  class) and Zachary's karate club (one label per class); reach 2.
- ``bashapes``: PyG's ``ExplainerDataset`` with ``BAGraph(300, 5)`` and 80 ``HouseMotif``
  (BA-Shapes); features are one-hot degrees (capped at 10); reach 3.
- ``scale``: not in the accuracy table: a random graph with planted communities (50,000
  nodes, about a million edges), time per epoch and peak resident memory of full-batch and
  ``NeighborLoader`` training for ``GATConv``, ``AD-dot`` and ``AD-gat``, each in a fresh process.

Every run writes ``OUT/runs/TASK/MODEL/CONFIG/seedS.json`` atomically; a rerun skips runs whose
record exists with the same settings, so an interrupted benchmark resumes where it stopped. The
tables go to stdout, ``OUT/results.md`` and ``OUT/results.json``. One torch thread by default.

    python examples/graph_benchmark.py                                  # everything
    python examples/graph_benchmark.py --tasks tree3 karate --models GATConv AD-dot --seeds 0 1
    python examples/graph_benchmark.py --quick --out /tmp/graphs       # seconds: a smoke run
"""

from __future__ import annotations

import argparse
import collections
import copy
import dataclasses
import functools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Batch, Data
from torch_geometric.datasets import ExplainerDataset, InfectionDataset, KarateClub
from torch_geometric.datasets.graph_generator import BAGraph, ERGraph
from torch_geometric.datasets.motif_generator import HouseMotif
from torch_geometric.loader import DataLoader, NeighborLoader
from torch_geometric.nn import (
    APPNP,
    GATConv,
    GATv2Conv,
    GCNConv,
    GPSConv,
    TransformerConv,
)
from torch_geometric.utils import (
    add_remaining_self_loops,
    degree,
    stochastic_blockmodel_graph,
    to_undirected,
)
from tqdm.auto import tqdm

from graphdiff.cli_types import distinct, positive_float, positive_int
from graphdiff.data import AddExpander
from graphdiff.io import atomic_write_text
from graphdiff.nn import AttentionDiffusion, DiffusionBlock

HEADS = 4
DROPOUTS = (0.0, 0.5)  # the grid's dropouts, unless a task or --dropouts sets them
ALPHA = 0.1
WEIGHT_DECAY = 5e-4


# --------------------------------------------------------------------------- data


def binary_tree(depth: int) -> Tuple[Tensor, List[int]]:
    """The complete binary tree of Tree-NeighborsMatch, numbered depth-first as in the paper's
    code: the root is 0, a node's left child follows it, its right child follows the left
    subtree (``node + 2**height``).

    Returns:
        ``edge_index [2, 2**(depth + 1) - 2]`` with every edge from a child to its parent (toward
        the root: messages flow from the leaves up), and the leaves from left to right.
    """
    sources, targets, leaves = [], [], []
    stack = [(0, depth)]
    while stack:
        node, height = stack.pop()
        if height == 0:
            leaves.append(node)
            continue
        children = (node + 1, node + 2**height)
        sources += children
        targets += [node, node]
        stack += [(children[1], height - 1), (children[0], height - 1)]  # left popped first
    return torch.tensor([sources, targets]), leaves


def tree_neighbors_match(
    depth: int, num_examples: Optional[int] = None, seed: int = 0
) -> List[Data]:
    r"""Tree-NeighborsMatch examples (Alon and Yahav, ICLR 2021, the ``DICTIONARY`` task of
    their code).

    A complete binary tree of depth :math:`d` has :math:`n = 2^{d+1} - 1` nodes and
    :math:`m = 2^d` leaves. Leaf :math:`j` (left to right) carries the key :math:`j` and a
    value :math:`\pi(j)` for a permutation :math:`\pi` of the :math:`m` values; the root carries
    a key :math:`k`; the label is :math:`\pi(k)`, the value of the leaf whose key is the root's.
    Features are ``[one_hot(key, m), one_hot(value, m)]`` (the root's value half and every
    inner node are zero). Edges point from children to parents, plus a self-loop on every node,
    so that the root sees a leaf after :math:`d` layers of message passing, not before.

    The paper's data set takes :math:`P = \min(1000, m!, 32000 // m)` distinct permutations
    and, for each, every root key: :math:`P m` examples with uniform labels.

    Args:
        depth (int): tree depth :math:`d \ge 1`.
        num_examples (int, optional): draw this many examples uniformly without replacement from
            the paper's data set (which is never built whole); ``None``: all of it, permutation
            by permutation. (default: :obj:`None`)
        seed (int, optional): seed of the draws. (default: ``0``)

    Returns:
        A list of graphs, each with ``x [n, 2m]``, ``edge_index [2, 2n - 2]`` (tree edges, then
        self-loops), ``y [1]`` (the label) and ``root_mask [n]`` (only node 0).
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 10:
        raise ValueError(f"depth must be an int in [1, 10], got {depth!r}")
    num_nodes, num_leaves = 2 ** (depth + 1) - 1, 2**depth
    num_permutations = min(1000, math.factorial(num_leaves), 32000 // num_leaves)
    total = num_permutations * num_leaves
    if num_examples is not None and (
        isinstance(num_examples, bool)
        or not isinstance(num_examples, int)
        or not 1 <= num_examples <= total
    ):
        raise ValueError(
            f"num_examples must be an int in [1, {total}] for depth {depth}, got {num_examples!r}"
        )
    generator = torch.Generator().manual_seed(seed)
    seen, permutations = set(), []
    while len(permutations) < num_permutations:  # distinct, as the paper's
        values = torch.randperm(num_leaves, generator=generator)
        if tuple(values.tolist()) not in seen:
            seen.add(tuple(values.tolist()))
            permutations.append(values)
    if num_examples is None:
        picks = range(total)
    else:
        picks = torch.randperm(total, generator=generator)[:num_examples].tolist()
    tree, leaves = binary_tree(depth)
    edge_index = add_remaining_self_loops(tree, num_nodes=num_nodes)[0]
    leaf_ids, keys = torch.tensor(leaves), torch.arange(num_leaves)
    root_mask = torch.zeros(num_nodes, dtype=torch.bool)
    root_mask[0] = True
    examples = []
    for pick in picks:
        values, key = permutations[pick // num_leaves], pick % num_leaves
        x = torch.zeros(num_nodes, 2 * num_leaves)
        x[leaf_ids, keys] = 1.0
        x[leaf_ids, num_leaves + values] = 1.0
        x[0, key] = 1.0
        y = values[key : key + 1].clone()
        examples.append(Data(x=x, edge_index=edge_index, y=y, root_mask=root_mask))
    return examples


def karate() -> Data:
    """Zachary's karate club: one labelled node per class trains; validation and test are
    halves of the rest."""
    data = KarateClub()[0]
    rest = (~data.train_mask).nonzero().view(-1)
    rest = rest[torch.randperm(rest.numel(), generator=torch.Generator().manual_seed(0))]
    data.val_mask = torch.zeros_like(data.train_mask)
    data.test_mask = torch.zeros_like(data.train_mask)
    data.val_mask[rest[: rest.numel() // 2]] = True
    data.test_mask[rest[rest.numel() // 2 :]] = True
    return data


def node_split(num_nodes: int, train: int, val: int, generator: torch.Generator) -> Dict:
    """Random train / val / test node masks of ``train`` and ``val`` nodes and the rest."""
    perm = torch.randperm(num_nodes, generator=generator)
    masks = {}
    for name, idx in (
        ("train_mask", perm[:train]),
        ("val_mask", perm[train : train + val]),
        ("test_mask", perm[train + val :]),
    ):
        masks[name] = torch.zeros(num_nodes, dtype=torch.bool)
        masks[name][idx] = True
    return masks


def sbm(
    num_classes: int = 5,
    per_class: int = 300,
    p_in: float = 0.02,
    p_out: float = 0.002,
    num_features: int = 32,
    noise: float = 2.5,
    num_val: int = 500,
    seed: int = 0,
) -> Data:
    """A homophilous stochastic block model whose features alone are barely informative:
    Gaussian class means plus noise of standard deviation ``noise``; 20 training nodes per
    class, ``num_val`` validation nodes, the rest test."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # stochastic_blockmodel_graph draws from the global generator
    probs = torch.full((num_classes, num_classes), p_out).fill_diagonal_(p_in)
    edge_index = to_undirected(stochastic_blockmodel_graph([per_class] * num_classes, probs))
    y = torch.arange(num_classes).repeat_interleave(per_class)
    means = torch.randn(num_classes, num_features, generator=gen)
    x = means[y] + noise * torch.randn(y.numel(), num_features, generator=gen)
    perm = torch.randperm(y.numel(), generator=gen)
    train = torch.cat([perm[y[perm] == c][:20] for c in range(num_classes)])
    rest = perm[~torch.isin(perm, train)]
    masks = {}
    for name, idx in (
        ("train_mask", train),
        ("val_mask", rest[:num_val]),
        ("test_mask", rest[num_val:]),
    ):
        masks[name] = torch.zeros(y.numel(), dtype=torch.bool)
        masks[name][idx] = True
    return Data(x=x, edge_index=edge_index, y=y, **masks)


def infection(num_nodes: int = 800, seed: int = 0) -> Data:
    """``InfectionDataset``: one Erdos-Renyi graph (mean degree 3) with 2% of its nodes
    infected; a node's label is its distance to the nearest infected node (0 to 4; 5: farther).
    Nodes split 50 / 25 / 25 % at random."""
    torch.manual_seed(seed)  # the generators draw from the global generator
    graph = InfectionDataset(
        ERGraph(num_nodes=num_nodes, edge_prob=3.0 / num_nodes),
        num_infected_nodes=num_nodes // 50,
        max_path_length=4,
        num_graphs=1,
    )[0]
    masks = node_split(
        num_nodes, num_nodes // 2, num_nodes // 4, torch.Generator().manual_seed(seed)
    )
    return Data(x=graph.x, edge_index=graph.edge_index, y=graph.y, **masks)


def bashapes(seed: int = 0) -> Data:
    """BA-Shapes: a Barabasi-Albert graph of 300 nodes with 80 houses attached; labels are the
    base (0) and the house positions (1-3). Features are one-hot node degrees capped at 10
    (softmax attention over identical features would see nothing); nodes split 50 / 25 / 25 %."""
    torch.manual_seed(seed)
    data = ExplainerDataset(BAGraph(300, 5), HouseMotif(), num_motifs=80)[0]
    n = data.num_nodes
    deg = degree(data.edge_index[1], n).long().clamp(max=10)
    masks = node_split(n, n // 2, n // 4, torch.Generator().manual_seed(seed))
    return Data(x=F.one_hot(deg, 11).float(), edge_index=data.edge_index, y=data.y, **masks)


@dataclasses.dataclass
class TaskData:
    """A task's graphs: ``train``/``val``/``test`` lists (node tasks: the same one graph, whose
    ``masks`` tell the splits apart; graph tasks: disjoint graphs read out at ``root_mask``)."""

    train: List[Data]
    val: List[Data]
    test: List[Data]
    masks: Tuple[str, str, str]
    graph_level: bool  # y is one label per graph (at its mask node), not one per node
    num_features: int
    num_classes: int
    reach: int
    batch_size: int  # graphs per training step (node tasks: 1)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """How a task is built and trained: its data, reach, budget and seeds."""

    build: Callable[[], Any]  # a Data (node task) or a list of graphs (graph task)
    reach: int
    max_epochs: int
    patience: int
    data: str  # what build() builds, recorded with every run
    batch_size: int = 1  # graphs per step (graph tasks)
    monitor: str = "val"  # the accuracy that picks the epoch and stops training
    dropouts: Optional[Tuple[float, ...]] = None  # the grid's dropouts, if not --dropouts


# Examples per depth: the paper's sets (up to 32,000 trees of up to 127 nodes, trained for
# hours on a GPU) drawn down to what one CPU core fits in minutes; the same number at every
# depth from 3 on (depth 2 has 96 in all), so that deeper trees squash more leaves into the
# root for the same number of examples to fit.
TREE_EXAMPLES = {2: 96, 3: 128, 4: 128, 5: 128, 6: 128}
NUM_SEEDS = 5  # seeds 0 .. NUM_SEEDS - 1 unless --seeds says otherwise


def task_specs(quick: bool) -> Dict[str, TaskSpec]:
    """The benchmark's tasks; ``quick`` shrinks data and budgets to a smoke run."""
    node = dict(max_epochs=3 if quick else 150, patience=3 if quick else 25)
    specs = {}
    for depth, examples in TREE_EXAMPLES.items():
        examples = min(examples, 16) if quick else examples
        # A fitting test, as the paper's (it reports training accuracy and stops on it; the
        # running accuracy of 2-3 steps an epoch is too noisy for a patience): no dropout.
        specs[f"tree{depth}"] = TaskSpec(
            build=functools.partial(tree_neighbors_match, depth, examples),
            reach=depth,
            max_epochs=3 if quick else 100,
            patience=3 if quick else 100,  # none: every model gets the budget unless it fits
            data=f"tree_neighbors_match({depth}, {examples})",
            batch_size=32,
            monitor="train",
            dropouts=(0.0,),
        )
    nodes = 100 if quick else 800
    specs["infection"] = TaskSpec(
        functools.partial(infection, nodes), reach=4, data=f"infection({nodes})", **node
    )
    sbm_args = dict(per_class=40, num_val=50) if quick else {}
    specs["sbm"] = TaskSpec(
        functools.partial(sbm, **sbm_args), reach=2, data=f"sbm({sbm_args})", **node
    )
    specs["karate"] = TaskSpec(karate, reach=2, data="karate()", **node)
    specs["bashapes"] = TaskSpec(bashapes, reach=3, data="bashapes()", **node)
    return specs


def root_key_baseline(spec: TaskSpec) -> Dict[str, float]:
    """Train and test accuracy of the best guess from the root's key alone on a tree task: the
    most frequent training label of each key. A model that no leaf reaches fits this much."""
    data = load_task(spec, expander=False)

    def key(graph: Data) -> int:
        return int(graph.x[0, : graph.num_features // 2].argmax())

    counts: Dict[int, collections.Counter] = {}
    for graph in data.train:
        counts.setdefault(key(graph), collections.Counter())[int(graph.y)] += 1
    guess = {k: c.most_common(1)[0][0] for k, c in counts.items()}
    return {
        split: statistics.mean(guess.get(key(g)) == int(g.y) for g in graphs)
        for split, graphs in (("train", data.train), ("test", data.test))
    }


def split_graphs(graphs: List[Data], seed: int = 0) -> Tuple[List[Data], ...]:
    """A random 60 / 20 / 20 % split of a graph task's examples."""
    perm = torch.randperm(len(graphs), generator=torch.Generator().manual_seed(seed)).tolist()
    a, b = int(0.6 * len(graphs)), int(0.8 * len(graphs))
    return tuple([graphs[i] for i in perm[s]] for s in (slice(0, a), slice(a, b), slice(b, None)))


def load_task(spec: TaskSpec, expander: bool) -> TaskData:
    """Build a task's graphs, with ``AddExpander(3, virtual_nodes=1, seed=0)`` applied to each
    when ``expander``."""
    built = spec.build()
    transform = AddExpander(3, virtual_nodes=1, seed=0) if expander else None
    if isinstance(built, Data):
        data = built
        if transform is not None:
            data = transform(data)
        data.edge_index = add_remaining_self_loops(data.edge_index, num_nodes=data.num_nodes)[0]
        data.edge_type = None  # stale after the self-loops; no model reads it
        return TaskData(
            [data],
            [data],
            [data],
            ("train_mask", "val_mask", "test_mask"),
            graph_level=False,
            num_features=data.num_features,
            num_classes=int(built.y.max()) + 1,
            reach=spec.reach,
            batch_size=1,
        )
    graphs = [transform(g) for g in built] if transform is not None else built
    train, val, test = split_graphs(graphs)
    return TaskData(
        train,
        val,
        test,
        ("root_mask",) * 3,
        graph_level=True,
        num_features=graphs[0].num_features,
        num_classes=graphs[0].num_features // 2,
        reach=spec.reach,
        batch_size=spec.batch_size,
    )


# --------------------------------------------------------------------------- models


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    layer: str  # gcn, gat, gatv2, transformer, appnp, gps, diffusion, block
    attention: str = "dot"  # the score of diffusion and block layers
    expander: bool = False

    @property
    def diffusion(self) -> bool:
        """Whether one layer reaches ``hops`` hops (else one)."""
        return self.layer in ("appnp", "diffusion", "block")


MODELS: Dict[str, ModelSpec] = {
    "GCNConv": ModelSpec("gcn"),
    "GATConv": ModelSpec("gat"),
    "GATv2Conv": ModelSpec("gatv2"),
    "TransformerConv": ModelSpec("transformer"),
    "GPSConv": ModelSpec("gps"),
    "APPNP": ModelSpec("appnp"),
    **{
        f"{prefix}-{attention}{'+X' if expander else ''}": ModelSpec(layer, attention, expander)
        for expander in (False, True)
        for prefix, layer in (("AD", "diffusion"), ("Block", "block"))
        for attention in ("dot", "gat")
    },
}


class LinearAPPNP(torch.nn.Module):
    """A linear map, then ``APPNP``'s ``K`` hops of personalised PageRank propagation."""

    def __init__(self, channels: int, hops: int):
        super().__init__()
        self.lin = torch.nn.Linear(channels, channels)
        self.prop = APPNP(K=hops, alpha=ALPHA)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.prop(self.lin(x), edge_index)


class ResidualConv(torch.nn.Module):
    """``LayerNorm(x + Dropout(ReLU(conv(x))))``: Alon and Yahav's residual layer."""

    def __init__(self, conv: torch.nn.Module, channels: int, dropout: float):
        super().__init__()
        self.conv = conv
        self.norm = torch.nn.LayerNorm(channels)
        self.dropout = dropout

    def forward(self, x: Tensor, edge_index: Tensor, batch: Optional[Tensor]) -> Tensor:
        h = F.dropout(F.relu(self.conv(x, edge_index)), self.dropout, self.training)
        return self.norm(x + h)


class OwnResidual(torch.nn.Module):
    """A layer with its own residuals and norms (``DiffusionBlock``, ``GPSConv``)."""

    def __init__(self, layer: torch.nn.Module, takes_batch: bool):
        super().__init__()
        self.layer = layer
        self.takes_batch = takes_batch

    def forward(self, x: Tensor, edge_index: Tensor, batch: Optional[Tensor]) -> Tensor:
        if self.takes_batch:
            return self.layer(x, edge_index, batch=batch)
        return self.layer(x, edge_index)


def graph_layer(spec: ModelSpec, channels: int, hops: int, dropout: float) -> torch.nn.Module:
    head = channels // HEADS
    if spec.layer == "block":
        block = DiffusionBlock(
            channels, HEADS, hops=hops, alpha=ALPHA, attention=spec.attention, dropout=dropout
        )
        return OwnResidual(block, takes_batch=False)
    if spec.layer == "gps":
        gps = GPSConv(
            channels,
            GCNConv(channels, channels),
            heads=HEADS,
            dropout=dropout,
            attn_kwargs=dict(dropout=dropout),
        )
        return OwnResidual(gps, takes_batch=True)
    convs: Dict[str, Callable[[], torch.nn.Module]] = {
        "gcn": lambda: GCNConv(channels, channels),
        "gat": lambda: GATConv(channels, head, heads=HEADS),
        "gatv2": lambda: GATv2Conv(channels, head, heads=HEADS),
        "transformer": lambda: TransformerConv(channels, head, heads=HEADS),
        "appnp": lambda: LinearAPPNP(channels, hops),
        "diffusion": lambda: AttentionDiffusion(
            channels, head, heads=HEADS, hops=hops, alpha=ALPHA, attention=spec.attention
        ),
    }
    return ResidualConv(convs[spec.layer](), channels, dropout)


def num_layers(spec: ModelSpec, reach: int, hops: int) -> int:
    """Layers that reach ``reach`` hops: one per hop, or one per ``hops`` for diffusion."""
    return math.ceil(reach / hops) if spec.diffusion else reach


class Net(torch.nn.Module):
    """MLP encoder, ``layers`` graph layers of width ``hidden``, linear read-out per node."""

    def __init__(
        self,
        spec: ModelSpec,
        in_channels: int,
        hidden: int,
        out_channels: int,
        layers: int,
        hops: int,
        dropout: float,
    ):
        super().__init__()
        self.encoder = torch.nn.Sequential(
            torch.nn.Linear(in_channels, hidden),
            torch.nn.ReLU(),
            torch.nn.Dropout(dropout),
            torch.nn.Linear(hidden, hidden),
        )
        self.layers = torch.nn.ModuleList(
            [graph_layer(spec, hidden, hops, dropout) for _ in range(layers)]
        )
        self.decoder = torch.nn.Linear(hidden, out_channels)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Optional[Tensor] = None) -> Tensor:
        x = self.encoder(x)
        for layer in self.layers:
            x = layer(x, edge_index, batch)
        return self.decoder(x)


# --------------------------------------------------------------------------- training


@dataclasses.dataclass(frozen=True)
class Job:
    task: str
    model: str
    lr: float
    dropout: float
    seed: int
    hidden: int
    hops: int
    max_epochs: int
    patience: int
    monitor: str  # "val" or "train": the accuracy that picks the epoch and stops training
    data: str  # the task's data set, as built

    @property
    def config(self) -> str:
        return f"lr{self.lr:g}_dropout{self.dropout:g}"

    def path(self, out: str) -> str:
        return os.path.join(
            out, "runs", self.task, self.model, self.config, f"seed{self.seed}.json"
        )


def predictions(model: Net, graph: Data, mask_name: str, graph_level: bool) -> Tuple[Tensor, ...]:
    """The model's logits on the nodes of ``mask_name`` and their labels."""
    out = model(graph.x, graph.edge_index, graph.batch)
    mask = graph[mask_name]
    return out[mask], graph.y if graph_level else graph.y[mask]


@torch.no_grad()
def accuracy(model: Net, graph: Data, mask_name: str, graph_level: bool) -> float:
    model.eval()
    logits, labels = predictions(model, graph, mask_name, graph_level)
    return (logits.argmax(-1) == labels).float().mean().item()


def train_run(job: Job, data: TaskData) -> Dict[str, Any]:
    """Train one model; return its accuracies at the epoch of best ``job.monitor`` accuracy
    (training stops at 1.0 or after ``job.patience`` epochs without a better one)."""
    torch.manual_seed(job.seed)
    spec = MODELS[job.model]
    layers = num_layers(spec, data.reach, job.hops)
    model = Net(
        spec, data.num_features, job.hidden, data.num_classes, layers, job.hops, job.dropout
    )
    opt = torch.optim.Adam(model.parameters(), lr=job.lr, weight_decay=WEIGHT_DECAY)
    train_mask, val_mask, test_mask = data.masks
    val_graph, test_graph = Batch.from_data_list(data.val), Batch.from_data_list(data.test)
    if data.graph_level:
        loader = DataLoader(
            data.train,
            batch_size=data.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(job.seed),
        )
        train_graph = Batch.from_data_list(data.train)
    else:
        loader, train_graph = [data.train[0]], data.train[0]
    best, best_state, best_epoch = -1.0, None, 0
    started = time.perf_counter()
    epoch = 0
    for epoch in range(1, job.max_epochs + 1):
        model.train()
        correct = total = 0
        for graph in loader:
            opt.zero_grad()
            logits, labels = predictions(model, graph, train_mask, data.graph_level)
            F.cross_entropy(logits, labels).backward()
            opt.step()
            correct += int((logits.argmax(-1) == labels).sum())
            total += labels.numel()
        if job.monitor == "train":  # as the paper: the running accuracy of the epoch
            score = correct / total
        else:
            score = accuracy(model, val_graph, val_mask, data.graph_level)
        if score > best:
            best, best_epoch = score, epoch
            best_state = copy.deepcopy(model.state_dict())
        if best == 1.0 or epoch - best_epoch >= job.patience:
            break
    seconds = time.perf_counter() - started
    model.load_state_dict(best_state)
    return {
        **dataclasses.asdict(job),
        "layers": layers,
        "val": accuracy(model, val_graph, val_mask, data.graph_level),
        "test": accuracy(model, test_graph, test_mask, data.graph_level),
        "train": accuracy(model, train_graph, train_mask, data.graph_level),
        "best_epoch": best_epoch,
        "epochs": epoch,
        "seconds": seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def run_job(job: Job, out: str, data: Callable[[], TaskData]) -> Dict[str, Any]:
    """A recorded run with the same settings, or train it (``data()`` builds its task) and
    record it atomically."""
    path = job.path(out)
    if os.path.exists(path):
        with open(path) as handle:
            previous = json.load(handle)
        if all(previous.get(k) == v for k, v in dataclasses.asdict(job).items()):
            return previous
    record = train_run(job, data())
    atomic_write_text(path, json.dumps(record, indent=2))
    return record


# --------------------------------------------------------------------------- scale


def community_graph(num_nodes: int, degree_out: int, num_classes: int, seed: int) -> Data:
    """A random graph with planted communities: each node draws ``degree_out`` neighbours, 80%
    in its own community, and edges are symmetrised (mean degree about ``2 degree_out``).
    Features as :func:`sbm`'s (class means plus noise), 10% of the nodes train."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(num_classes, (num_nodes,), generator=gen)
    members = torch.argsort(y)
    counts = torch.bincount(y, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    src = torch.arange(num_nodes).repeat_interleave(degree_out)
    within = torch.rand(src.numel(), generator=gen) < 0.8
    rank = (torch.rand(src.numel(), generator=gen) * counts[y[src]]).long()
    same = members[starts[y[src]] + rank]
    anywhere = torch.randint(num_nodes, (src.numel(),), generator=gen)
    dst = torch.where(within, same, anywhere)
    edge_index = to_undirected(torch.stack([src, dst]), num_nodes=num_nodes)
    means = torch.randn(num_classes, 32, generator=gen)
    x = means[y] + 2.5 * torch.randn(num_nodes, 32, generator=gen)
    train = torch.rand(num_nodes, generator=gen) < 0.1
    return Data(x=x, edge_index=edge_index, y=y, train_mask=train)


SCALE_MODELS = ("GATConv", "AD-dot", "AD-gat")
SCALE_REACH = 2  # a homophilous task's reach: GATConv gets 2 layers, AttentionDiffusion 1


def rss_mb(field: str = "VmRSS") -> float:
    """Resident set size of this process in MiB (Linux), now (``VmRSS``) or its peak since the
    last :func:`reset_peak_rss` (``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> None:
    """Start ``VmHWM`` again from the current RSS (Linux >= 4.0), so that the peak measured
    is that of what follows, not of building the graph."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def scale_worker(settings: Dict[str, Any]) -> Dict[str, Any]:
    """Time ``settings['epochs']`` training epochs of one model in one mode on the community
    graph (in its own process: the peak resident memory is this run's)."""
    torch.set_num_threads(settings["threads"])
    data = add_self_loops_data(
        community_graph(settings["nodes"], settings["degree_out"], 10, seed=0)
    )
    spec = MODELS[settings["model"]]
    layers = num_layers(spec, SCALE_REACH, settings["hops"])
    torch.manual_seed(0)
    model = Net(spec, data.num_features, settings["hidden"], 10, layers, settings["hops"], 0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sampled_hops = layers * (settings["hops"] if spec.diffusion else 1)
    if settings["mode"] == "full":
        batches: Any = [data]
    else:
        batches = NeighborLoader(
            data,
            num_neighbors=[settings["fanout"]] * sampled_hops,
            input_nodes=data.train_mask,
            batch_size=settings["batch_size"],
            shuffle=True,
        )
    reset_peak_rss()
    before = rss_mb()
    times, nodes = [], []
    for _ in range(settings["epochs"]):
        started = time.perf_counter()
        for batch in batches:
            opt.zero_grad()
            out = model(batch.x, batch.edge_index)
            seeds = batch.train_mask if settings["mode"] == "full" else slice(batch.batch_size)
            F.cross_entropy(out[seeds], batch.y[seeds]).backward()
            opt.step()
            nodes.append(batch.num_nodes)
        times.append(time.perf_counter() - started)
    peak = rss_mb("VmHWM")
    return {
        **settings,
        "layers": layers,
        "sampled_hops": sampled_hops,
        "num_nodes": data.num_nodes,
        "num_edges": data.num_edges,
        "seconds_per_epoch": statistics.median(times),
        "nodes_per_batch": statistics.mean(nodes),
        "peak_rss_mb": peak,
        "extra_rss_mb": peak - before,
    }


def add_self_loops_data(data: Data) -> Data:
    data.edge_index = add_remaining_self_loops(data.edge_index, num_nodes=data.num_nodes)[0]
    return data


def run_scale(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """Every (model, mode) of the scale experiment in a fresh subprocess, recorded."""
    nodes, degree_out = (2000, 5) if args.quick else (50_000, 10)
    records = []
    jobs = [(m, mode) for m in args.scale_models for mode in ("full", "neighbor")]
    for model, mode in tqdm(jobs, desc="scale", unit="run"):
        settings = dict(
            model=model,
            mode=mode,
            nodes=nodes,
            degree_out=degree_out,
            hidden=args.hidden,
            hops=args.hops,
            fanout=10,
            batch_size=1024,
            epochs=1 if args.quick else 2,
            threads=args.threads,
        )
        path = os.path.join(args.out, "runs", "scale", model, f"{mode}.json")
        if os.path.exists(path):
            with open(path) as handle:
                previous = json.load(handle)
            if all(previous.get(k) == v for k, v in settings.items()):
                records.append(previous)
                continue
        command = [sys.executable, __file__, "--scale-worker", json.dumps(settings)]
        proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
        record = json.loads(proc.stdout.strip().splitlines()[-1])
        atomic_write_text(path, json.dumps(record, indent=2))
        records.append(record)
    return records


# --------------------------------------------------------------------------- tables


def select(first_seed_runs: List[Dict[str, Any]]) -> Tuple[float, float]:
    """The grid point ``(lr, dropout)`` whose run on the first seed has the best validation
    accuracy (the first such point in grid order on ties)."""
    best = max(first_seed_runs, key=lambda r: r["val"])  # max keeps the first maximum
    return best["lr"], best["dropout"]


def summarise(selected: Dict[Tuple[str, str], List[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """One row per (task, model): mean and sample standard deviation over seeds of the
    selected configuration's test accuracy (train and validation accuracies: means)."""
    rows = []
    for (task, model), runs in selected.items():
        tests = [r["test"] for r in runs]
        rows.append(
            {
                "task": task,
                "model": model,
                "lr": runs[0]["lr"],
                "dropout": runs[0]["dropout"],
                "layers": runs[0]["layers"],
                "seeds": len(runs),
                "val": statistics.mean(r["val"] for r in runs),
                "test": statistics.mean(tests),
                "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
                "train": statistics.mean(r["train"] for r in runs),
                "train_std": statistics.stdev(r["train"] for r in runs) if len(runs) > 1 else 0.0,
            }
        )
    return rows


def accuracy_table(
    rows: List[Dict[str, Any]], tasks: List[str], models: List[str], metric: str
) -> str:
    """``metric`` accuracy (%) per model and task, with the layers used; the best mean in bold,
    an asterisk on the others within one standard deviation of it (theirs or the best's)."""
    cell = {(r["task"], r["model"]): r for r in rows}
    lines = ["| model | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    best = {}
    for task in tasks:
        present = [cell[task, m] for m in models if (task, m) in cell]
        best[task] = max(present, key=lambda r: r[metric]) if present else None
    for model in models:
        cells = []
        for task in tasks:
            row = cell.get((task, model))
            if row is None:
                cells.append("")
                continue
            mean, std = 100 * row[metric], 100 * row[f"{metric}_std"]
            text = f"{mean:.1f} ± {std:.1f} ({row['layers']})"
            top = best[task]
            if row is top:
                text = f"**{text}**"
            elif top[metric] - row[metric] <= max(row[f"{metric}_std"], top[f"{metric}_std"]):
                text += "*"
            cells.append(text)
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scale_table(records: List[Dict[str, Any]]) -> str:
    lines = [
        "| model | layers x hops | mode | nodes per step | s per epoch | peak RSS (MiB) "
        "| RSS growth (MiB) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in records:
        hops = r["hops"] if MODELS[r["model"]].diffusion else 1
        mode = (
            "full batch"
            if r["mode"] == "full"
            else f"NeighborLoader [{r['fanout']}] x {r['sampled_hops']}"
        )
        lines.append(
            f"| {r['model']} | {r['layers']} x {hops} | {mode} | {r['nodes_per_batch']:,.0f} "
            f"| {r['seconds_per_epoch']:.2f} | {r['peak_rss_mb']:,.0f} | {r['extra_rss_mb']:,.0f} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    specs_names = [f"tree{d}" for d in TREE_EXAMPLES] + ["infection", "sbm", "karate", "bashapes"]
    parser.add_argument(
        "--tasks", nargs="+", default=specs_names + ["scale"], choices=specs_names + ["scale"]
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        help="default: 0 1 2 3 4; 0 with --quick. The grid runs on the first seed, the "
        "selected configuration on the others",
    )
    parser.add_argument("--lrs", nargs="+", type=positive_float, default=[1e-3, 5e-3])
    parser.add_argument(
        "--dropouts", nargs="+", type=float, help="default: 0 (trees), 0 0.5 (other tasks)"
    )
    parser.add_argument("--hidden", type=positive_int, default=32)
    parser.add_argument("--hops", type=positive_int, default=5, help="K of diffusion layers")
    parser.add_argument(
        "--scale-models", nargs="+", default=list(SCALE_MODELS), choices=list(SCALE_MODELS)
    )
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads")
    parser.add_argument("--out", default="runs/graph_benchmark")
    parser.add_argument("--quick", action="store_true", help="tiny data and budget: seconds")
    parser.add_argument("--scale-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scale_worker:  # one measurement of run_scale, in its own process
        print(json.dumps(scale_worker(json.loads(args.scale_worker))))
        return {}
    for name in ("seeds", "lrs", "dropouts"):
        distinct(getattr(args, name) or [], f"--{name}", parser)
    if not all(0.0 <= p < 1.0 for p in args.dropouts or []):
        parser.error(f"--dropouts must be in [0, 1), got {args.dropouts}")
    if args.hidden % HEADS:
        parser.error(f"--hidden must be a multiple of {HEADS} (the heads), got {args.hidden}")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    specs = task_specs(args.quick)
    tasks = [t for t in args.tasks if t != "scale"]
    plan = []  # (task, model, grid, seeds)
    for task in tasks:
        spec = specs[task]
        seeds = args.seeds or list(range(1 if args.quick else NUM_SEEDS))
        dropouts = args.dropouts or list(spec.dropouts or DROPOUTS)
        grid = [(lr, p) for lr in args.lrs for p in dropouts]
        plan += [(task, model, grid, seeds) for model in args.models]
    cache: Dict[Tuple[str, bool], TaskData] = {}

    def task_data(job: Job) -> Callable[[], TaskData]:
        key = (job.task, MODELS[job.model].expander)

        def build() -> TaskData:
            if key not in cache:
                cache.clear()  # jobs come task by task: keep one task's data
                cache[key] = load_task(specs[job.task], key[1])
            return cache[key]

        return build

    bar = tqdm(total=sum(len(grid) + len(seeds) - 1 for _, _, grid, seeds in plan), unit="run")
    selected: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    runs = []
    for task, model, grid, seeds in plan:
        spec = specs[task]

        def run(lr: float, dropout: float, seed: int) -> Dict[str, Any]:
            job = Job(
                task,
                model,
                lr,
                dropout,
                seed,
                args.hidden,
                args.hops,
                spec.max_epochs,
                spec.patience,
                spec.monitor,
                spec.data,
            )
            bar.set_postfix_str(f"{task} {model} {job.config} seed{seed}")
            record = run_job(job, args.out, task_data(job))
            bar.update()
            runs.append(record)
            return record

        first = [run(lr, dropout, seeds[0]) for lr, dropout in grid]
        lr, dropout = select(first)
        chosen = [r for r in first if (r["lr"], r["dropout"]) == (lr, dropout)]
        selected[task, model] = chosen + [run(lr, dropout, seed) for seed in seeds[1:]]
    bar.close()
    rows = summarise(selected)
    scale = run_scale(args) if "scale" in args.tasks else []
    seconds = time.perf_counter() - started

    command = " ".join(
        ["python examples/graph_benchmark.py", *(sys.argv[1:] if argv is None else argv)]
    )
    trees = [t for t in tasks if t.startswith("tree")]
    others = [t for t in tasks if not t.startswith("tree")]
    parts = [
        f"Command: `{command}`  \n"
        f"lr {args.lrs}, hidden {args.hidden}, K = {args.hops}, {args.threads} thread(s), "
        f"{platform.processor() or platform.machine()}; this invocation took {seconds:.0f} s "
        "(skipped runs cost nothing).\n\n"
        "Accuracy (%), mean ± std over seeds, of the configuration selected on the first "
        "seed's validation accuracy, at the epoch of best validation accuracy (trees: of best "
        "training accuracy); (layers); **best** mean, * within one std of it."
    ]
    if trees:
        chance = " | ".join(f"{100 / 2 ** int(t[4:]):.1f}" for t in trees)
        key_only = {t: root_key_baseline(specs[t]) for t in trees}
        for metric in ("train", "test"):
            baseline = " | ".join(f"{100 * key_only[t][metric]:.1f}" for t in trees)
            parts.append(
                f"Tree-NeighborsMatch by depth, {metric} accuracy:\n\n"
                + accuracy_table(rows, trees, args.models, metric)
                + f"\n| root key alone | {baseline} |\n| chance | {chance} |"
            )
    if others:
        parts.append("Test accuracy:\n\n" + accuracy_table(rows, others, args.models, "test"))
    if scale:
        parts.append("Scale:\n\n" + scale_table(scale))
    text = "\n\n".join(parts) + "\n"
    atomic_write_text(os.path.join(args.out, "results.md"), text)
    settings = {k: v for k, v in vars(args).items() if k != "scale_worker"}
    summary = {"settings": settings, "seconds": seconds, "rows": rows, "runs": runs}
    summary["scale"] = scale
    atomic_write_text(os.path.join(args.out, "results.json"), json.dumps(summary, indent=2))
    print(text)
    return summary


if __name__ == "__main__":
    main()
