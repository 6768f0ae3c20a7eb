"""The import arrows of docs/design.md (Layout), checked in fresh interpreters: patterns <- data
<- nn <- models <- train <- cli; analysis needs no torch; patterns never load torch_geometric.nn; nn
knows nothing about data, tasks or models."""

import subprocess
import sys

import pytest


def loaded_after(statement: str) -> set:
    code = f"import sys\n{statement}\nprint('\\n'.join(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return set(result.stdout.split())


@pytest.mark.parametrize(
    "statement, forbidden",
    [
        (
            "import analysis",
            {"torch", "graphdiff.nn", "graphdiff.data", "graphdiff.tasks", "graphdiff.models"},
        ),
        ("import graphdiff.patterns", {"torch_geometric.nn", "graphdiff.data", "graphdiff.nn"}),
        ("import graphdiff.nn", {"graphdiff.data", "graphdiff.tasks", "graphdiff.models"}),
        ("import graphdiff.models", {"graphdiff.train", "graphdiff.tasks"}),
        (
            "import graphdiff.tasks",
            {"torch_geometric", "graphdiff.data", "graphdiff.nn", "graphdiff.models"},
        ),
        ("import graphdiff.cli_types", {"torch"}),
    ],
)
def test_import_arrows(statement, forbidden):
    assert not forbidden & loaded_after(statement)


def test_the_version_is_the_installed_one():
    import importlib.metadata

    import graphdiff

    assert graphdiff.__version__ == importlib.metadata.version("graphdiff")
