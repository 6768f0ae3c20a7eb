"""Sphinx configuration: the API reference built from the docstrings (``make docs``)."""

import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)  # this checkout's graphdiff and analysis, not an installed copy

project = "graphdiff"
author = "graphdiff contributors"
copyright = "graphdiff contributors"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext"}
exclude_patterns = ["_build"]
# The markdown pages (design, performance, tasks) are read on GitHub or as files; the reference
# links to them rather than rendering them, so Sphinx needs no markdown parser.

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
autoclass_content = "both"  # the class docstring (PyG style: math, Args, Shapes) and __init__'s
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes:" as fields: autodoc documents the attributes themselves
nitpicky = False

html_theme = "alabaster"
html_static_path: list = []
