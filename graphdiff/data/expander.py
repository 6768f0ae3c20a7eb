r"""Exphormer's expander edges and virtual nodes for any graph (Shirzad et al., ICML 2023).

A graph transformer attends over the input edges, the edges of a random expander on the same
nodes and a few virtual nodes joined to every node: the expander gives every pair of nodes a
path of ``O(log n)`` hops at ``O(n)`` edges, the virtual nodes a path of two hops.
:class:`AddExpander` adds both to a PyG :class:`~torch_geometric.data.Data` as one
``edge_index`` with an ``edge_type`` per edge and a ``virtual_mask`` per node.
"""

from __future__ import annotations

import math
import warnings
from typing import Dict, Optional, Tuple

import numpy as np
import scipy.sparse
import torch
from scipy.sparse.csgraph import connected_components
from torch import Tensor
from torch_geometric.data import Batch, Data
from torch_geometric.transforms import BaseTransform

from graphdiff.checks import INT64_LIMIT, check_edge_index, check_int, is_real

# Edge attributes whose first dimension must be the number of edges (PyG's reserved names).
EDGE_FEATURE_KEYS = ("edge_attr", "edge_weight")
# Stale after new edges: PyG builds them from edge_index (ToSparseTensor), so they come after.
ADJACENCY_KEYS = ("adj", "adj_t")
# Node-level by name when a graph has as many nodes as edges (PyG's keys for node features,
# labels and positions; keys containing "node" or ending in "_mask" count too).
NODE_KEYS = ("x", "y", "pos", "norm")


def _permutation_edges(num_nodes: int, degree: int, generator: Optional[torch.Generator]) -> Tensor:
    r"""Exphormer's draw: ``degree`` uniform random permutations :math:`\pi_1, \dots, \pi_d` of
    the nodes, each giving the edges :math:`i \to \pi_k(i)` and :math:`\pi_k(i) \to i`.

    Every node is the source of exactly ``2 * degree`` edges and the target of exactly
    ``2 * degree``, counted with multiplicity: a fixed point :math:`\pi_k(i) = i` gives the
    self-loop :math:`i \to i` twice, and a pair drawn by several permutations repeats.

    Returns:
        ``[2, 2 * degree * num_nodes]`` int64 (CPU): the forward edges of every permutation,
        then their reverses.
    """
    nodes = torch.arange(num_nodes).repeat(degree)
    images = torch.cat([torch.randperm(num_nodes, generator=generator) for _ in range(degree)])
    return torch.stack([torch.cat([nodes, images]), torch.cat([images, nodes])])


def _simple(edge_index: Tensor, num_nodes: int) -> Tensor:
    """The simple graph of ``edge_index``: self-loops dropped, each ``(j, i)`` kept once, sorted
    by target, then source (the canonical order of :mod:`graphdiff.patterns`)."""
    src, dst = edge_index
    keys = torch.unique(dst[src != dst] * num_nodes + src[src != dst])  # sorted
    return torch.stack([keys % num_nodes, keys // num_nodes])


def _components(edge_index: Tensor, num_nodes: int) -> int:
    """Connected components of the (symmetric) graph ``edge_index``: ``O(n + E)``."""
    src, dst = edge_index.numpy()
    adjacency = scipy.sparse.coo_matrix((np.ones(src.size), (dst, src)), (num_nodes, num_nodes))
    return connected_components(adjacency, directed=False)[0]


def _attribute_levels(data: Data, num_nodes: int) -> Dict[str, str]:
    """``{key: "node" or "edge"}`` for the tensors of ``data`` that new nodes or edges extend
    (the rule is in :class:`AddExpander`'s docstring)."""
    num_edges = data.edge_index.size(1)
    levels = {}
    for key, value in data.items():
        if not isinstance(value, Tensor) or value.dim() == 0 or key == "edge_index":
            continue
        if "index" in key or "face" in key:  # node ids: the real nodes keep theirs
            continue
        if key.startswith("edge_label") or f"{key}_index" in data:  # rows of their own index
            continue
        rows = value.size(data.__cat_dim__(key, value))
        if rows == num_nodes == num_edges:  # PyG would decide by the name: only where it says
            if "edge" in key:
                levels[key] = "edge"
            elif key in NODE_KEYS or "node" in key or key.endswith("_mask"):
                levels[key] = "node"
            else:
                raise ValueError(
                    f"data.{key} has {rows} rows, and the graph has as many nodes as edges: "
                    f"AddExpander cannot tell whether it is node- or edge-level. Put 'edge' in "
                    f"the key of an edge-level tensor (e.g. 'edge_{key}') or 'node' in that of "
                    f"a node-level one"
                )
        elif data.is_edge_attr(key):
            levels[key] = "edge"
        elif data.is_node_attr(key):
            levels[key] = "node"
    return levels


def _worker_seed(seed: int) -> int:
    """The seed of a ``DataLoader`` worker's generator: ``seed`` mixed with the worker's torch
    seed (``get_worker_info().seed``: the loader's base seed plus the worker id, drawn anew for
    every epoch's workers), or ``seed`` itself outside a worker."""
    info = torch.utils.data.get_worker_info()
    if info is None:
        return seed
    return int(np.random.SeedSequence([seed, info.seed]).generate_state(1, np.uint64)[0])


def _spectral_gap(edge_index: Tensor, num_nodes: int) -> float:
    """``lambda_2`` of the normalised Laplacian of a connected graph, by :mod:`analysis`: the
    full dense spectrum up to 1024 nodes, Lanczos above."""
    import analysis  # only for the optional Ramanujan check: graphdiff.data needs it nowhere else

    return analysis.spectral_gap(edge_index, num_nodes)


class AddExpander(BaseTransform):
    r"""PyG transform: add Exphormer's expander edges and ``virtual_nodes`` virtual nodes to a
    graph, keeping its edges and attributes (Shirzad et al., "Exphormer: Sparse Transformers
    for Graphs", ICML 2023).

    **Expander.** ``degree`` uniform random permutations :math:`\pi_1, \dots, \pi_d` of the
    ``N`` real nodes give the edges :math:`i \to \pi_k(i)` and their reverses: a
    :math:`2d`-regular multigraph, near-Ramanujan with high probability for large ``N``
    (Friedman): its second adjacency eigenvalue is close to :math:`2\sqrt{2d-1}`, the smallest
    a :math:`2d`-regular graph can have, so its normalised Laplacian has the gap
    :math:`\lambda_2 \approx 1 - \sqrt{2d-1}/d`. The transform keeps its simple graph: the
    self-loops of fixed points :math:`\pi_k(i) = i` are dropped (a fixed point is no neighbour,
    and only some nodes would get one) and a pair drawn more than once is kept once, since an
    attention layer would weigh a repeated edge twice. Each real node so gains at most
    :math:`2d` expander neighbours (exactly
    :math:`2d` but for ``O(d^2)`` collisions in expectation, whatever ``N``); the result stays
    symmetric. An expander edge that is also an input edge is kept: the two differ in
    ``edge_type``. The transform adds no self-loops, and
    :class:`~graphdiff.nn.AttentionDiffusion` adds none unless asked: a node attends to
    itself only through a loop of the input, so give a graph without them one per node
    (``AttentionDiffusion(..., add_self_loops=True)``, or
    :class:`~torch_geometric.transforms.AddSelfLoops` before this transform).

    **Redraws.** A draw is accepted when it is connected and, with ``tolerance`` given, when
    its gap is near the Ramanujan value (Exphormer's test, on the adjacency scale):

    .. math::
        \lambda_2 \ge 1 - \frac{2\sqrt{2d-1} + \text{tolerance}}{2d},

    i.e. a second adjacency eigenvalue at most :math:`2\sqrt{2d-1} + \text{tolerance}` when
    the graph is :math:`2d`-regular. Otherwise it is drawn again, up to ``max_tries`` draws in
    all; when none passes, the best one is kept (fewest components, then largest gap) with a
    warning that says what it reached. Small graphs need
    this: with ``d = 2`` a fifth of the draws on 5 nodes and 4% on 30 nodes are disconnected.
    The connectivity test costs ``O(N d)``; the gap test one eigensolve per draw
    (:func:`analysis.spectral_gap`, measured for ``d = 3`` on a shared 2-core machine: 0.06 s
    on 2000 nodes, 0.3 s on :math:`10^4`, 30 s on :math:`10^5`), which large graphs rarely
    need: every draw measured on 3000 nodes or more (``d = 2`` to ``5``) had a gap within 1%
    of the Ramanujan value.

    **Virtual nodes.** Nodes ``N, ..., N + V - 1`` are appended, each joined both ways to every
    real node and not to each other (as Exphormer; PyG's
    :class:`~torch_geometric.transforms.VirtualNode` adds a single one).

    **Layout.** ``edge_index`` holds the input edges first, unchanged and in their order, then
    the expander edges (sorted by target, then source), then the edges into the virtual nodes
    (``i -> N + k`` for every virtual node ``k``, then every real ``i``) and the edges out of
    them (``N + k -> i``, in the same order); ``edge_type`` marks them :attr:`INPUT_EDGE` (0),
    :attr:`EXPANDER_EDGE` (1), :attr:`VIRTUAL_IN_EDGE` (2) and :attr:`VIRTUAL_OUT_EDGE` (3),
    in and out numbered as PyG's :class:`~torch_geometric.transforms.VirtualNode` numbers
    them after the input's types, and kept apart as Exphormer does.

    **Attributes.** Edge-level tensors are extended with zeros for the new edges (``False``
    for booleans), ``edge_weight`` with ones (as PyG's ``VirtualNode``). Node-level tensors
    (``x``, ``y``, ``pos``, masks such as ``train_mask``) are extended with zeros for the
    virtual nodes, so that a virtual node is in no split; models usually give virtual nodes a
    learned embedding, found by ``virtual_mask``. The rule is PyG's
    (:meth:`~torch_geometric.data.Data.is_node_attr`,
    :meth:`~torch_geometric.data.Data.is_edge_attr`): a tensor with ``N`` rows (along its
    concatenation dimension) is node-level, one with ``E`` rows edge-level, any other is left
    alone. When ``N = E`` PyG decides by the key, and so does the transform where the key says
    it: a key containing ``edge`` is edge-level; ``x``, ``y``, ``pos``, ``norm`` and keys
    containing ``node`` or ending in ``_mask`` are node-level; any other such tensor is a
    ``ValueError``. Left as they are: tensors of node ids (keys containing ``index`` or
    ``face``), labels of an index of their own (a key ``K`` next to a ``K_index``, and every
    key starting with ``edge_label``: they belong to the pairs of ``edge_label_index``, not to
    ``edge_index``), graph-level tensors and non-tensors. ``num_nodes`` is set to ``N + V``.

    **Randomness.** With a ``seed`` the transform draws from its own generator, seeded once
    per process: the ``k``-th graph it transforms gets the same edges in every run. Without one
    it draws from torch's global generator (``torch.manual_seed`` makes it reproducible). Use it
    as a dataset's ``pre_transform`` for one expander per graph, computed once in order, as
    Exphormer does: the reproducible route for a dataset. As a ``transform`` each access draws
    a new one, and in :class:`~torch.utils.data.DataLoader` workers each worker's copy reseeds
    itself on first use from ``seed`` and the worker's torch seed
    (:func:`~torch.utils.data.get_worker_info`, which differs between workers and epochs), so
    that workers do not repeat each other's draws; the draws are then reproducible when the
    loader is (``torch.manual_seed``, or ``DataLoader(generator=...)``). Without a seed each
    worker draws from its global generator, which PyTorch seeds the same way.

    Args:
        degree (int): permutations ``d`` (at least 1); each node gains up to ``2d`` expander
            neighbours. ``d = 1`` gives a union of cycles, no expander: Exphormer uses 3 to 5.
        virtual_nodes (int, optional): virtual nodes ``V`` to append. (default: ``0``)
        seed (int, optional): seed of the transform's generator; ``None`` draws from torch's
            global generator. (default: :obj:`None`)
        max_tries (int, optional): draws at most per graph (``1``: take the first draw, no
            test). (default: ``10``)
        tolerance (float, optional): accept a draw whose second adjacency eigenvalue is at
            most ``2 sqrt(2d - 1) + tolerance`` (Exphormer uses ``0.1``; negative values ask
            for more than the Ramanujan bound, which small graphs exceed). ``None`` tests
            connectivity only. (default: :obj:`None`)

    Shapes:
        - **input:** a :class:`~torch_geometric.data.Data` with ``edge_index [2, E]`` and
          ``N >= 3`` nodes (features ``x [N, F]`` optional), not a
          :class:`~torch_geometric.data.Batch`: expander edges would join different graphs.
        - **output:** the same ``Data`` (a shallow copy) with ``edge_index [2, E + X + 2 V N]``
          (``X <= 2 d N`` expander edges), ``edge_type [E + X + 2 V N]`` (int64),
          ``virtual_mask [N + V]`` (bool) and every node- and edge-level tensor extended.

    Raises:
        TypeError: at construction, on a non-integer ``degree``, ``virtual_nodes``, ``seed`` or
            ``max_tries`` or a non-real ``tolerance``; when called, on input other than a
            ``Data`` (a ``Batch``, ``HeteroData``) or a non-tensor ``edge_attr``/``edge_weight``.
        ValueError: at construction, on ``degree < 1``, ``virtual_nodes < 0``, ``max_tries < 1``
            or a non-finite ``tolerance``; when called, on a graph with fewer than 3 nodes,
            without ``edge_index``, with a sparse adjacency (``adj``/``adj_t``: apply
            :class:`~torch_geometric.transforms.ToSparseTensor` after this transform), a batch
            vector, an ``edge_type`` or ``virtual_mask`` of its own (a second application), an
            ``edge_attr``/``edge_weight`` whose first dimension is not ``E``, or, when
            ``N = E``, a tensor of that many rows whose key does not say its level.

    Example:
        >>> from torch_geometric.datasets import KarateClub
        >>> data = KarateClub(transform=AddExpander(3, virtual_nodes=1, seed=0))[0]
        >>> data
        Data(x=[35, 34], edge_index=[2, 414], y=[35], train_mask=[35], edge_type=[414],
        virtual_mask=[35], num_nodes=35)
        >>> data.edge_type.bincount()  # input, expander (at most 2 * 3 * 34), into, out of V
        tensor([156, 190,  34,  34])
    """

    #: ``edge_type`` of the input's edges.
    INPUT_EDGE = 0
    #: ``edge_type`` of the expander's edges.
    EXPANDER_EDGE = 1
    #: ``edge_type`` of the edges into the virtual nodes, ``i -> N + k``.
    VIRTUAL_IN_EDGE = 2
    #: ``edge_type`` of the edges out of the virtual nodes, ``N + k -> i``.
    VIRTUAL_OUT_EDGE = 3

    def __init__(
        self,
        degree: int,
        virtual_nodes: int = 0,
        seed: Optional[int] = None,
        max_tries: int = 10,
        tolerance: Optional[float] = None,
    ):
        self.degree = check_int("degree", degree, low=1)
        self.virtual_nodes = check_int("virtual_nodes", virtual_nodes, low=0)
        self.seed = None if seed is None else check_int("seed", seed, low=0, high=INT64_LIMIT)
        self.max_tries = check_int("max_tries", max_tries, low=1)
        if tolerance is not None:
            if not is_real(tolerance):
                raise TypeError(f"tolerance must be a real number or None, got {tolerance!r}")
            if not math.isfinite(tolerance):
                raise ValueError(f"tolerance must be finite, got {tolerance}")
            tolerance = float(tolerance)
        self.tolerance = tolerance
        # (the process's seed, its generator), made on first use in each process.
        self._stream: Optional[Tuple[int, torch.Generator]] = None

    @property
    def min_gap(self) -> float:
        r"""The gap a draw must reach with ``tolerance`` given:
        :math:`1 - (2\sqrt{2d-1} + \text{tolerance}) / (2d)` (``0.0`` without one)."""
        if self.tolerance is None:
            return 0.0
        d = 2 * self.degree
        return 1.0 - (2.0 * math.sqrt(d - 1) + self.tolerance) / d

    @property
    def generator(self) -> Optional[torch.Generator]:
        """The generator the draws come from: the transform's own, seeded from ``seed`` in
        the process (and ``DataLoader`` worker) that calls it first; ``None`` (torch's global
        generator) without a seed."""
        if self.seed is None:
            return None
        seed = _worker_seed(self.seed)
        if self._stream is None or self._stream[0] != seed:
            self._stream = (seed, torch.Generator().manual_seed(seed))
        return self._stream[1]

    def expander(self, num_nodes: int) -> Tensor:
        """One accepted expander on ``num_nodes`` nodes (see the class docstring): ``[2, X]``
        int64 on the CPU, symmetric, without self-loops or repeated edges, sorted by target.
        Warns when no draw passes the test."""
        num_nodes = check_int("num_nodes", num_nodes, low=3, why="an expander needs 3 nodes")
        generator = self.generator
        best, best_score = None, None
        for _ in range(self.max_tries):
            edges = _simple(_permutation_edges(num_nodes, self.degree, generator), num_nodes)
            if self.max_tries == 1:
                return edges
            components = _components(edges, num_nodes)
            # A disconnected draw has gap 0; the gap test runs only where it can fail.
            if components == 1 and self.min_gap > 0:
                gap = _spectral_gap(edges, num_nodes)
            else:
                gap = 0.0
            if components == 1 and gap >= self.min_gap:
                return edges
            score = (-components, gap)
            if best_score is None or score > best_score:
                best, best_score = edges, score
        components, gap = -best_score[0], best_score[1]
        reached = (
            f"{components} connected components"
            if components > 1
            else f"a spectral gap of {gap:.4g} < min_gap = {self.min_gap:.4g}"
        )
        warnings.warn(
            f"AddExpander: none of max_tries={self.max_tries} draws on {num_nodes} nodes passed "
            f"the test; keeping the best, with {reached}. Raise max_tries, or raise (or drop) "
            f"tolerance",
            stacklevel=2,
        )
        return best

    def forward(self, data: Data) -> Data:
        num_nodes = self._check(data)
        levels = _attribute_levels(data, num_nodes)  # before any work: it may raise
        num_virtual = self.virtual_nodes
        device = data.edge_index.device
        expander = self.expander(num_nodes).to(device)
        real = torch.arange(num_nodes, device=device).repeat(num_virtual)
        virtual = num_nodes + torch.arange(num_virtual, device=device).repeat_interleave(num_nodes)
        parts = (data.edge_index, expander, torch.stack([real, virtual]))
        parts += (torch.stack([virtual, real]),)
        num_edges = [part.size(1) for part in parts]
        new_edges = sum(num_edges[1:])

        for key, level in levels.items():
            value = data[key]
            dim = data.__cat_dim__(key, value)
            size = list(value.shape)
            size[dim] = new_edges if level == "edge" else num_virtual
            if size[dim]:
                fill = 1 if key == "edge_weight" else 0
                data[key] = torch.cat([value, value.new_full(size, fill)], dim=dim)

        data.edge_index = torch.cat(parts, dim=1)
        data.edge_type = torch.cat(
            [
                torch.full((count,), kind, dtype=torch.long, device=device)
                for count, kind in zip(
                    num_edges,
                    (
                        self.INPUT_EDGE,
                        self.EXPANDER_EDGE,
                        self.VIRTUAL_IN_EDGE,
                        self.VIRTUAL_OUT_EDGE,
                    ),
                )
            ]
        )
        data.virtual_mask = torch.arange(num_nodes + num_virtual, device=device) >= num_nodes
        data.num_nodes = num_nodes + num_virtual
        return data

    def _check(self, data: Data) -> int:
        """Validate ``data`` before any work; return its number of nodes."""
        if isinstance(data, Batch) or not isinstance(data, Data):
            got = "a Batch" if isinstance(data, Batch) else type(data).__name__
            raise TypeError(
                "AddExpander transforms one graph, a torch_geometric.data.Data (apply it per "
                f"graph, e.g. as a dataset's pre_transform, before batching), got {got}"
            )
        for key in ADJACENCY_KEYS:
            if key in data:
                raise ValueError(
                    f"AddExpander needs edge_index, not a sparse '{key}' (it would not see the "
                    "new edges): apply ToSparseTensor after AddExpander"
                )
        if "batch" in data:
            raise ValueError(
                "data has a batch vector: AddExpander transforms one graph (apply it before "
                "batching), as its expander edges would join different graphs"
            )
        for key in ("edge_type", "virtual_mask"):
            if key in data:
                raise ValueError(
                    f"data already has '{key}', which AddExpander writes (applied twice? rename "
                    f"the graph's own '{key}' first)"
                )
        if "edge_index" not in data or data.edge_index is None:
            raise ValueError("AddExpander needs data.edge_index [2, E] (it may be empty)")
        num_nodes = data.num_nodes
        if num_nodes is None or num_nodes < 3:
            raise ValueError(f"AddExpander needs a graph of at least 3 nodes, got {num_nodes}")
        edge_index = check_edge_index(data.edge_index, num_nodes)
        for key in EDGE_FEATURE_KEYS:
            value = data.get(key)
            if value is None:
                continue
            if not isinstance(value, Tensor):
                raise TypeError(f"data.{key} must be a tensor, got {type(value).__name__}")
            if value.dim() == 0 or value.size(0) != edge_index.size(1):
                raise ValueError(
                    f"data.{key} must have one row per edge, shape [E, ...] with "
                    f"E = {edge_index.size(1)}, got {list(value.shape)}"
                )
        return num_nodes

    def __repr__(self) -> str:
        extra = [f"virtual_nodes={self.virtual_nodes}"] if self.virtual_nodes else []
        if self.seed is not None:
            extra.append(f"seed={self.seed}")
        if self.max_tries != 10:
            extra.append(f"max_tries={self.max_tries}")
        if self.tolerance is not None:
            extra.append(f"tolerance={self.tolerance}")
        return f"{self.__class__.__name__}({', '.join([str(self.degree), *extra])})"
