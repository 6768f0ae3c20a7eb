"""graphdiff: multi-hop attention diffusion (Diffuser) on sparse patterns, on PyTorch Geometric.

The package root stays free of torch so that ``analysis`` (which imports ``graphdiff.checks``)
loads without it; the API lives in the subpackages: ``graphdiff.patterns``, ``graphdiff.data``,
``graphdiff.nn``, ``graphdiff.models``, ``graphdiff.tasks``, ``graphdiff.train``.
"""

__version__ = "0.1.0"  # the package version: pyproject.toml reads it from here
