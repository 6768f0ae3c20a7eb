r"""Spectral and expansion analysis of sparse attention patterns (docs/design.md, Layout).

Everything here reads a pattern as a graph (token = node, "i attends j" = edge ``j -> i``) and
works on the symmetrised simple graph ``W`` with normalised Laplacian
``L = I - D^-1/2 W D^-1/2`` unless said otherwise. Inputs: a pattern with a length ``n``, an
edge_index ``[2, E]`` with ``n``, a square scipy sparse matrix, or a prebuilt :class:`Graph`.

>>> import analysis
>>> from graphdiff.patterns import diffuser
>>> analysis.spectral_gap(diffuser(), 4096)          # lambda_2 of L   # doctest: +SKIP
>>> analysis.hops_to_cover(diffuser(), 4096)         # doctest: +SKIP

Imports ``graphdiff.patterns`` (lazily, to resolve preset names, in :mod:`analysis.reporting`)
and the torch-free helpers ``graphdiff.checks`` and ``graphdiff.io`` only, so ``import analysis``
loads no torch; matplotlib is loaded only when figures are written.
"""

from analysis.diffusion import (
    AttentionSpectrum,
    attention_spectrum,
    diffusion_coefficients,
    diffusion_spectrum,
)
from analysis.expansion import (
    cheeger_bounds,
    complete_graph_epsilon,
    hops_to_cover,
    receptive_field,
)
from analysis.graph import Graph, as_graph
from analysis.reporting import Report, report
from analysis.spectral import (
    AdjacencyLambda,
    DisconnectedGraphWarning,
    LaplacianExtremes,
    SpectralConvergenceError,
    adjacency_lambda,
    laplacian_extremes,
    spectral_gap,
)

__all__ = [
    "Graph",
    "as_graph",
    "spectral_gap",
    "laplacian_extremes",
    "adjacency_lambda",
    "complete_graph_epsilon",
    "cheeger_bounds",
    "receptive_field",
    "hops_to_cover",
    "diffusion_spectrum",
    "diffusion_coefficients",
    "attention_spectrum",
    "report",
    "Report",
    "LaplacianExtremes",
    "AdjacencyLambda",
    "AttentionSpectrum",
    "DisconnectedGraphWarning",
    "SpectralConvergenceError",
]
