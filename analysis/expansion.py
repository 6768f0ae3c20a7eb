r"""Expansion of a pattern graph: closeness to full attention, Cheeger bounds, receptive field.

Spectral quantities (:func:`complete_graph_epsilon`, :func:`cheeger_bounds`) use the
symmetrised simple graph. Reachability (:func:`receptive_field`, :func:`hops_to_cover`) follows
the edges as attention does: after ``k`` hops of diffusion query ``i`` has heard key ``j`` when a
directed path ``j -> ... -> i`` of at most ``k`` edges exists.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Optional

import numpy as np
import scipy.sparse
from tqdm import tqdm

from analysis.graph import Graph, as_graph
from analysis.spectral import DisconnectedGraphWarning, extremes, spectral_gap
from graphdiff.checks import check_int

EXACT_MAX_NODES = 2048  # receptive fields from every query up to here, from a sample above
DEFAULT_SAMPLES = 64


def complete_graph_epsilon(graph: Any, n: Optional[int] = None) -> float:
    r"""How well the pattern approximates full attention, spectrally.

    The smallest :math:`\epsilon` such that every nonzero eigenvalue of ``L`` lies in
    :math:`[(1-\epsilon) c, (1+\epsilon) c]` for the best ``c``:

    .. math::
        \epsilon = \frac{\lambda_n - \lambda_2}{\lambda_n + \lambda_2},

    0 for the complete graph (all nonzero eigenvalues equal ``n / (n-1)``), 1 for a disconnected
    graph (warns with :class:`DisconnectedGraphWarning`).
    """
    g = as_graph(graph, n)
    if g.n < 2:
        raise ValueError(f"complete_graph_epsilon needs n >= 2 nodes, got n={g.n}")
    if g.num_components > 1:
        warnings.warn(
            DisconnectedGraphWarning(f"graph has {g.num_components} components: epsilon = 1"),
            stacklevel=2,
        )
    return gap_and_epsilon(g)[1]


def gap_and_epsilon(g: Graph) -> tuple[float, float]:
    """``lambda_2`` and :func:`complete_graph_epsilon` of ``g`` from one eigensolve, without
    warnings: ``(0.0, 1.0)`` for a disconnected graph. For callers that need both (the report).

    Raises:
        SpectralConvergenceError: when the sparse solver does not converge.
    """
    if g.num_components > 1:
        return 0.0, 1.0
    result = extremes(g, 2, 1)
    lam2, lam_max = float(result.smallest[1]), float(result.largest[-1])
    return lam2, (lam_max - lam2) / (lam_max + lam2)


def cheeger_bounds(graph: Any, n: Optional[int] = None) -> tuple[float, float]:
    r"""Bounds on the conductance :math:`h(G) = \min_S |\partial S| / \min(vol S, vol \bar S)`.

    .. math::
        \lambda_2 / 2 \le h(G) \le \sqrt{2 \lambda_2}.
    """
    lam2 = spectral_gap(graph, n)
    return lam2 / 2.0, math.sqrt(2.0 * lam2)


def receptive_field(
    graph: Any, n: Optional[int] = None, hops: int = 5, samples: Optional[int] = None
) -> np.ndarray:
    r"""Fraction of (query, key) pairs joined by a directed path of at most ``k`` hops.

    .. math::
        r_k = \frac{1}{n^2} \left| \{(i, j) : ((I + A)^k)_{ij} \ne 0\} \right|,
        \qquad k = 0, \dots, \text{hops},

    with ``A[i, j] = 1`` for the edge ``j -> i``; ``r_0 = 1/n``.

    Args:
        hops: the largest ``k``.
        samples: queries to average over. ``None``: every query up to ``EXACT_MAX_NODES``
            nodes (exact), ``DEFAULT_SAMPLES`` evenly spaced queries (both ends included) above.
            Any value ``>= n`` is exact.

    Returns:
        ``[hops + 1]`` float64, non-decreasing.
    """
    g = as_graph(graph, n)
    hops = check_int("hops", hops, 0)
    reached, _ = _reach(g, _queries(g.n, samples), hops)
    return _field(reached, g.n, hops)


def hops_to_cover(
    graph: Any, n: Optional[int] = None, samples: Optional[int] = None
) -> Optional[int]:
    """The smallest ``k`` with ``receptive_field(..., k) == 1``: every query has heard every key.

    This is the largest backward eccentricity (the directed diameter when exact). ``None`` when
    some key never reaches some query (e.g. a causal or disconnected pattern). With sampled
    queries (see :func:`receptive_field`) it is a lower bound, exact for patterns whose
    eccentricity is largest at the ends of the sequence (windows, blocks, strides).
    """
    g = as_graph(graph, n)
    _, levels = _reach(g, _queries(g.n, samples), None)
    return levels


def field_and_cover(g: Graph, hops: int) -> tuple[np.ndarray, Optional[int]]:
    """``receptive_field(g, hops=hops)`` and ``hops_to_cover(g)`` (default samples) from one
    search: the search to cover passes through the first ``hops`` hops anyway. For callers that
    need both (the report).
    """
    hops = check_int("hops", hops, 0)
    reached, levels = _reach(g, _queries(g.n, None), None)
    return _field(reached, g.n, hops), levels


def _queries(n: int, samples: Optional[int]) -> np.ndarray:
    if samples is None:
        samples = n if n <= EXACT_MAX_NODES else DEFAULT_SAMPLES
    samples = check_int("samples", samples, 1)
    if samples >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, samples).round().astype(np.int64))


def _reach(g: Graph, queries: np.ndarray, hops: Optional[int]) -> tuple[np.ndarray, Optional[int]]:
    """Breadth-first search backwards from ``queries``, all at once.

    The frontier is a sparse ``[s, n]`` matrix (row = query); one hop is ``frontier @ A`` minus
    what was seen, so every query touches each edge at most once: ``O(s * E)`` time and
    ``O(s * n)`` memory for the seen-mask, whatever the number of hops.

    Returns:
        ``reached [levels]``: mean number of keys reached within ``k`` hops, ``k = 0..`` (at most
        ``hops + 1`` entries when ``hops`` is given, fewer when the search runs out first), and
        the number of hops after which every query has reached every key (``None`` if never, or
        not within ``hops``).
    """
    s, n = len(queries), g.n
    adjacency = g.directed
    seen = np.zeros((s, n), dtype=bool)
    seen[np.arange(s), queries] = True
    frontier = scipy.sparse.csr_matrix((np.ones(s), (np.arange(s), queries)), shape=(s, n))
    counts = [np.ones(s, dtype=np.int64)]
    with tqdm(desc="receptive field", unit="hop", leave=False, disable=n < 65536) as bar:
        while frontier.nnz and (hops is None or len(counts) <= hops):
            step = (frontier @ adjacency).tocoo()
            new = ~seen[step.row, step.col]
            rows, cols = step.row[new], step.col[new]
            seen[rows, cols] = True
            frontier = scipy.sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(s, n))
            counts.append(counts[-1] + np.bincount(rows, minlength=s))
            bar.update()
    if counts[-1].min() == n:  # the last hop may add nothing: count hops until coverage
        covered: Optional[int] = int(np.argmax([c.min() == n for c in counts]))
    else:
        covered = None
    return np.array([c.mean() for c in counts], dtype=np.float64), covered


def _field(reached: np.ndarray, n: int, hops: int) -> np.ndarray:
    """The receptive field ``[hops + 1]`` from :func:`_reach`'s counts: cut to ``hops`` hops, or
    held at its last value past the end of the search (nothing new is reached after it)."""
    reached = reached[: hops + 1]
    return np.pad(reached, (0, hops + 1 - reached.size), mode="edge") / n
