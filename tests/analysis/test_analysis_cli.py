"""`graphdiff analyze ...`: the top-level command hands every argument to analysis.cli."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("graphdiff.patterns")
pytest.importorskip("matplotlib")

from analysis import cli as analysis_cli
from graphdiff import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_graphdiff_analyze_passes_options_through(tmp_path, capsys):
    out = tmp_path / "rep"
    args = [
        "analyze",
        "--patterns",
        "diffuser",
        "Window(8) | Global(1)",
        "--n",
        "64",
        "--out",
        str(out),
    ]
    assert cli.main(args) == 0
    assert (out / "report.md").exists()
    printed = capsys.readouterr().out
    assert "| diffuser | 64 |" in printed and r"| Window(8) \| Global(1) | 64 |" in printed
    assert "" not in printed.splitlines()  # no blank lines, no figure links
    assert "![" not in printed and printed.splitlines()[-1].startswith("wrote ")


def test_graphdiff_analyze_help_is_the_analysis_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["analyze", "--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert printed == analysis_cli.build_parser().format_help()
    assert "--patterns" in printed and "--checkpoint" in printed


def test_graphdiff_analyze_reports_bad_options_as_analyze(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["analyze", "--n", "64"])  # --out is required
    assert exit_info.value.code == 2
    assert "graphdiff analyze: error" in capsys.readouterr().err


def test_out_must_not_be_a_file(tmp_path, capsys):
    existing = tmp_path / "afile"
    existing.write_text("x")
    for main, prefix in [(analysis_cli.main, []), (cli.main, ["analyze"])]:
        assert main(prefix + ["--patterns", "Window(4)", "--n", "16", "--out", str(existing)]) == 2
        err = capsys.readouterr().err
        assert (
            err.count("\n") == 1 and "graphdiff analyze: error" in err and "not a directory" in err
        )
    # A file on the way to the directory: also one line, exit status 2.
    assert (
        analysis_cli.main(["--patterns", "Window(4)", "--n", "16", "--out", str(existing / "sub")])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "graphdiff analyze: error" in err
    assert existing.read_text() == "x"


def test_python_dash_m_graphdiff_analyze():
    result = subprocess.run(
        [sys.executable, "-m", "graphdiff", "analyze", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: graphdiff analyze" in result.stdout and "--out" in result.stdout
