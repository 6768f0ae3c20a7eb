"""User-defined patterns: from an edge_index, a callable, a networkx graph or a dense mask."""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Union

import numpy as np
import torch
from torch import Tensor

from graphdiff.checks import check_edge_index, is_integer
from graphdiff.patterns.base import Edges, Pattern

EdgeSource = Union[Tensor, np.ndarray, Callable[[int], Tensor], Any]


def _from_networkx(graph: Any) -> Tensor:
    """Edge ``(u, v)`` of a directed graph means ``u -> v``; undirected edges go both ways."""
    if not all(is_integer(node) for node in graph.nodes):
        raise TypeError("Custom(networkx graph) needs integer nodes 0..n-1 (the token positions)")
    edges = torch.tensor(list(graph.edges), dtype=torch.long).reshape(-1, 2).t()
    if not graph.is_directed():
        edges = torch.cat([edges, edges.flip(0)], dim=1)
    return edges


def _from_mask(mask: Tensor) -> Tensor:
    """``mask[i, j]`` True means query ``i`` attends key ``j``: the edge ``j -> i``."""
    if mask.dim() != 2 or mask.size(0) != mask.size(1):
        raise ValueError(f"a dense mask must be square [n, n], got {list(mask.shape)}")
    dst, src = mask.nonzero(as_tuple=True)
    return torch.stack([src, dst])


class Custom(Pattern):
    """A pattern given by the user.

    Args:
        source: one of

            * an integer ``edge_index`` ``[2, E]`` (row 0 = source/key, row 1 = target/query);
            * a callable ``n -> edge_index`` for patterns that depend on the length;
            * a networkx graph with integer nodes (directed edge ``(u, v)`` = ``u -> v``;
              undirected edges are added in both directions);
            * a dense boolean mask ``[n, n]`` with ``mask[i, j]`` = "query i attends key j".
        name (str, optional): shown by ``repr``.

    A fixed edge set works for any ``n`` larger than its largest index.
    """

    def __init__(self, source: EdgeSource, name: str | None = None):
        self.name = name
        self.function: Callable[[int], Tensor] | None = None
        self.edge_index: Tensor | None = None
        if isinstance(source, np.ndarray):
            source = torch.from_numpy(source)
        if isinstance(source, Tensor) and source.dtype == torch.bool:
            self.edge_index = _from_mask(source)
        elif isinstance(source, Tensor):
            self.edge_index = check_edge_index(source).long()
        elif (
            hasattr(source, "nodes") and hasattr(source, "edges") and hasattr(source, "is_directed")
        ):
            self.edge_index = check_edge_index(
                _from_networkx(source), name="networkx graph's nodes"
            )
        elif callable(source):
            self.function = source
        else:
            raise TypeError(
                "Custom needs an edge_index tensor, a callable n -> edge_index, a networkx graph "
                f"or a boolean mask, got {type(source).__name__}"
            )
        if self.edge_index is not None:
            # A private copy: later edits of the caller's tensor must not change the pattern.
            self.edge_index = self.edge_index.clone().contiguous()
            self._digest = hashlib.sha1(self.edge_index.numpy().tobytes()).hexdigest()

    def _key(self) -> tuple:
        if self.function is not None:
            return (self.function, self.name)
        return (self._digest, self.edge_index.size(1), self.name)

    def _edges(self, n: int) -> Edges:
        source = self.edge_index if self.function is None else self.function(n)
        edge_index = check_edge_index(source, n, name=f"Custom({self._label()}) edges").long()
        return edge_index[0], edge_index[1]

    def _label(self) -> str:
        if self.name is not None:
            return repr(self.name)
        if self.function is not None:
            return getattr(self.function, "__name__", "function")
        return f"<{self.edge_index.size(1)} edges>"

    def __repr__(self) -> str:
        return f"Custom({self._label()})"
