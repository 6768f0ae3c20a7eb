"""The report and `graphdiff analyze`: files written, table content, learned attention."""
import math
import os

import networkx as nx
import numpy as np
import pytest

pytest.importorskip("graphdiff.patterns")
pytest.importorskip("matplotlib")

import analysis
from analysis import cli, expansion
from analysis.reporting import report


def test_report_is_exported_as_a_function():
    # The module is analysis.reporting: a submodule named "report" would replace the function
    # attribute on first import.
    assert analysis.report is report and callable(analysis.report)


def test_report_table_and_figures(tmp_path):
    result = report(["window only", "diffuser", "Window(4) & Window(2)"], [64, 128], str(tmp_path))
    names = sorted(os.listdir(tmp_path))
    assert names == ["lambda2_vs_n.png", "receptive_field.png", "report.md", "spectra.png"]
    for name in names:
        assert os.path.getsize(tmp_path / name) > 100
        if name.endswith(".png"):
            assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (tmp_path / "report.md").read_text()
    assert "| diffuser | 128 |" in text and "| window only | 64 |" in text
    assert len(result.rows) == 6
    row = next(r for r in result.rows if r.pattern == "diffuser" and r.n == 128)
    # Against networkx on the pattern's simple undirected graph, not against our own solver.
    edges = row_pattern("diffuser")(128).t().tolist()
    reference = nx.Graph([(a, b) for a, b in edges if a != b])
    reference.add_nodes_from(range(128))
    assert row.lambda_2 == pytest.approx(sorted(nx.normalized_laplacian_spectrum(reference))[1])
    assert row.field[-1] == 1.0 and row.hops_to_cover <= 2


def test_report_searches_reachability_once_per_row(monkeypatch):
    # hops_to_cover and the receptive field of a row come from one breadth-first search.
    calls = []
    search = expansion._reach

    def counted(*args):
        calls.append(args)
        return search(*args)

    monkeypatch.setattr(expansion, "_reach", counted)
    result = report({"window": "Window(8)"}, [64, 128])
    assert len(calls) == len(result.rows) == 2
    for row in result.rows:
        graph = analysis.as_graph(row_pattern("Window(8)"), row.n)
        assert row.hops_to_cover == analysis.hops_to_cover(graph) == math.ceil((row.n - 1) / 4)
        np.testing.assert_array_equal(row.field, analysis.receptive_field(graph, hops=len(row.field) - 1))


def row_pattern(expression):
    from graphdiff.patterns import parse_pattern

    return parse_pattern(expression)


def test_report_flags_disconnected_patterns(tmp_path):
    result = report({"dilated": "Window(8, dilation=2)"}, [64])
    (row,) = result.rows
    assert not row.connected and row.lambda_2 == 0.0 and row.hops_to_cover is None
    assert "0 (disconnected)" in result.markdown and "never" in result.markdown


def test_cli_writes_the_report(tmp_path, capsys):
    out = tmp_path / "rep"
    assert cli.main(["--patterns", "random only", "Window(8) | Global(1)", "--n", "100", "--out", str(out)]) == 0
    assert (out / "report.md").exists()
    assert "| random only | 100 |" in capsys.readouterr().out


def test_cli_rejects_bad_input(tmp_path, capsys):
    assert cli.main(["--patterns", "Nonsense(3)", "--n", "64", "--out", str(tmp_path)]) == 2
    assert "error" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--n", "64"])  # --out is required


def test_report_with_learned_attention(tmp_path, synthetic_attention):
    # Synthetic per-layer attention spectra stand in for a checkpoint's.
    layers = []
    for seed in range(2):
        edge_index, attn = synthetic_attention(50, heads=2, seed=seed)
        layers.append(analysis.attention_spectrum(attn, edge_index, 50, k=4))
    result = report(["random only"], [64], str(tmp_path), attention=layers)
    assert (tmp_path / "attention_spectra.png").exists()
    assert "## Learned attention" in result.markdown and "| 1 | 2 |" in result.markdown
    worst = [np.abs(values[:, 1]).max() for values in (layers[1].eigs, layers[1].diffused)]
    assert f"| 1 | 2 | {worst[0]:.4f} | {worst[1]:.4f} |" in result.markdown


@pytest.mark.parametrize("lengths, error", [([64.5], TypeError), ([True], TypeError),
                                            ([1], ValueError), ([], ValueError)])
def test_report_rejects_bad_lengths(tmp_path, lengths, error):
    with pytest.raises(error, match="lengths"):
        report(["window only"], lengths, str(tmp_path))


def test_cli_with_a_checkpoint(tmp_path, capsys):
    train = pytest.importorskip("graphdiff.train.checkpoint")
    from graphdiff.models import DiffuserConfig, DiffuserForSequenceClassification

    config = DiffuserConfig.small(layers=2, kernel="heat", t=2.0, hops=3)
    model = DiffuserForSequenceClassification(config)
    path = str(tmp_path / "tiny.pt")
    train.save_checkpoint(path, {"model": model.state_dict(), "config": config.to_dict(), "step": 0})
    out = tmp_path / "rep"
    args = ["--patterns", "random only", "--n", "64", "--checkpoint", path, "--checkpoint-n", "96", "--k", "3"]
    assert cli.main(args + ["--out", str(out)]) == 0
    assert (out / "attention_spectra.png").exists()
    printed = capsys.readouterr().out
    assert "## Learned attention" in printed and "| 1 | " in printed
    assert "heat, t=2.0, K=3" in printed  # the checkpoint's diffusion, not the default PPR
    for layer in cli.learned_attention(path, 96, 3):
        np.testing.assert_allclose(layer.diffused, analysis.diffusion_spectrum(
            layer.eigs, config.alpha, 3, "heat", 2.0))
