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


def test_one_length_draws_no_lambda2_figure_and_says_so(tmp_path):
    # lambda_2 against n would be one dot per pattern.
    result = report(["diffuser", "Window(8)"], [64], str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["receptive_field.png", "report.md", "spectra.png"]
    assert "no figure of lambda_2 against n" in result.markdown
    assert "lambda2_vs_n.png" not in result.markdown


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
        np.testing.assert_array_equal(
            row.field, analysis.receptive_field(graph, hops=len(row.field) - 1)
        )


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
    assert (
        cli.main(
            ["--patterns", "random only", "Window(8) | Global(1)", "--n", "100", "--out", str(out)]
        )
        == 0
    )
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
    # n = 50: every eigenvalue is known, so the diffusion's column is one exact number.
    worst_a = np.abs(layers[1].eigs[:, 1]).max()
    worst_t = max(
        second_diffusion_modulus(a) for a in synthetic_matrices(synthetic_attention, 50, 1)
    )
    assert f"| 1 | 2 | {worst_a:.4f} | {worst_t:.4f} |" in result.markdown


def synthetic_matrices(synthetic_attention, n, seed, heads=2):
    edge_index, attn = synthetic_attention(n, heads=heads, seed=seed)
    for h in range(heads):
        a = np.zeros((n, n))
        a[edge_index[1], edge_index[0]] = attn[:, h]
        yield a


def second_diffusion_modulus(a, alpha=0.1, hops=5):
    """Dense reference: the second-largest |eigenvalue| of T = sum_k theta_k A^k, one copy of
    the Perron eigenvalue 1 left out."""
    n = a.shape[0]
    t, z = np.zeros((n, n)), np.eye(n)
    for k in range(hops + 1):
        t += (alpha * (1 - alpha) ** k if k < hops else (1 - alpha) ** hops) * z
        z = z @ a
    values = np.linalg.eigvals(t)
    values = np.delete(values, np.argmin(np.abs(values - 1)))
    return np.abs(values).max()


def attention_of(a):
    """(attn [E], edge_index [2, E]) of a dense attention matrix, as attention_spectrum takes
    them."""
    dst, src = np.nonzero(a)
    return a[dst, src], np.stack([src, dst])


def test_learned_attention_column_is_the_diffusion_second_modulus():
    # A = 6 x 6 attention with eigenvalues about 1, -0.30 +- 0.57i, -0.20 +- 0.15i, 0: f(0) =
    # alpha = 0.1 beats |f(mu_2)| = 0.033, so the diffusion's second eigenvalue is not f(mu_2).
    rng = np.random.default_rng(1)
    n = 6
    while True:
        mask = rng.random((n, n)) < 0.4
        np.fill_diagonal(mask, False)
        if not (mask.sum(1) == 0).any():
            a = np.where(mask, rng.random((n, n)), 0)
            a /= a.sum(1, keepdims=True)
            spectrum = analysis.attention_spectrum(*attention_of(a), n, k=n)
            if second_diffusion_modulus(a) > abs(spectrum.diffused[0, 1]) + 0.05:
                break
    expected = second_diffusion_modulus(a)
    np.testing.assert_allclose(spectrum.second, [[expected, expected]], rtol=1e-9)
    # k = 2 on a dense-size graph: all eigenvalues are computed anyway, still exact.
    np.testing.assert_allclose(
        analysis.attention_spectrum(*attention_of(a), n, k=2).second[0], expected
    )
    assert (
        f"| 0 | 1 | {abs(spectrum.eigs[0, 1]):.4f} | {expected:.4f} |"
        in report(["Window(2)"], [8], attention=[spectrum]).markdown
    )


def test_learned_attention_column_bounds_uncomputed_eigenvalues(monkeypatch, synthetic_attention):
    # Sparse path (k leading eigenvalues only): the column is an interval holding the true value.
    monkeypatch.setattr(analysis.diffusion, "DENSE_MAX_NODES", 100)
    n = 300
    edge_index, attn = synthetic_attention(n, heads=2, seed=1)
    for k in (2, 4):
        spectrum = analysis.attention_spectrum(attn, edge_index, n, k=k)
        for (low, high), a in zip(spectrum.second, synthetic_matrices(synthetic_attention, n, 1)):
            assert low - 1e-6 <= second_diffusion_modulus(a) <= high + 1e-6
    # Head 1, k = 2: mu_2 is real, the uncomputed mu may be complex with the same modulus and
    # map a little higher: an honest interval, shown as one.
    spectrum = analysis.attention_spectrum(attn[:, 1], edge_index, n, k=2)
    ((low, high),) = spectrum.second
    assert low < high
    assert (
        f"| 0 | 1 | {abs(spectrum.eigs[0, 1]):.4f} | [{low:.4f}, {high:.4f}] |"
        in report(["Window(2)"], [8], attention=[spectrum]).markdown
    )


def test_pattern_unions_are_escaped_in_the_table(tmp_path):
    report(["Window(4) | Global(1)"], [32], str(tmp_path))
    line = next(
        line for line in (tmp_path / "report.md").read_text().splitlines() if "Global" in line
    )
    assert line.startswith(r"| Window(4) \| Global(1) | 32 |")
    assert (
        len(line.replace(r"\|", "").split("|")[1:-1]) == 7
    )  # as many cells as the header has columns


def test_a_single_pattern_is_one_pattern():
    from graphdiff.patterns import Window

    (by_name,) = report("diffuser", [64]).rows
    assert by_name.pattern == "diffuser" and by_name.n == 64
    (by_object,) = report(Window(4), [32]).rows
    assert by_object.pattern == "Window(4)"
    assert by_object.lambda_2 == pytest.approx(analysis.spectral_gap(Window(4), 32))


@pytest.mark.parametrize(
    "lengths, error",
    [([64.5], TypeError), ([True], TypeError), ([1], ValueError), ([], ValueError)],
)
def test_report_rejects_bad_lengths(tmp_path, lengths, error):
    with pytest.raises(error, match="lengths"):
        report(["window only"], lengths, str(tmp_path))


def test_cli_with_a_checkpoint(tmp_path, capsys):
    train = pytest.importorskip("graphdiff.train.checkpoint")
    from graphdiff.models import DiffuserConfig, DiffuserForSequenceClassification

    config = DiffuserConfig.small(layers=2, kernel="heat", t=2.0, hops=3)
    model = DiffuserForSequenceClassification(config)
    path = str(tmp_path / "tiny.pt")
    train.save_checkpoint(
        path, {"model": model.state_dict(), "config": config.to_dict(), "step": 0}
    )
    out = tmp_path / "rep"
    args = [
        "--patterns",
        "random only",
        "--n",
        "64",
        "--checkpoint",
        path,
        "--checkpoint-n",
        "96",
        "--k",
        "3",
    ]
    assert cli.main(args + ["--out", str(out)]) == 0
    assert (out / "attention_spectra.png").exists()
    printed = capsys.readouterr().out
    assert "## Learned attention" in printed and "| 1 | " in printed
    assert "heat, t=2.0, K=3" in printed  # the checkpoint's diffusion, not the default PPR
    for layer in cli.learned_attention(path, 96, 3):
        np.testing.assert_allclose(
            layer.diffused, analysis.diffusion_spectrum(layer.eigs, config.alpha, 3, "heat", 2.0)
        )
