"""The benchmark scripts measure what they claim: their variants compute the same products
as independent references, their ratios follow their definitions, and a tiny run writes its
report."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SHAPE = dict(heads=2, channels=4, hops=3, window=4, num_global=2, num_random=2)


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench_layer():
    return load("bench_layer")


def output(bench_layer, variant: str, n: int = 48) -> torch.Tensor:
    forward, _, _ = bench_layer._setup(variant=variant, n=n, **SHAPE)
    with torch.no_grad():
        out = forward()
    return torch.stack(out) if isinstance(out, list) else out


def test_fused_module_and_gather_scatter_variants_compute_the_same_layer(bench_layer):
    torch.testing.assert_close(output(bench_layer, "module"), output(bench_layer, "gather"),
                               rtol=1e-4, atol=1e-5)


def test_bare_spmm_variants_and_hop_compute_the_same_product(bench_layer):
    n, heads, channels = 48, SHAPE["heads"], SHAPE["channels"]
    per_head = output(bench_layer, "spmm_heads", n)  # [H, N, C]
    block_diagonal = output(bench_layer, "spmm", n).view(heads, n, channels)
    torch.testing.assert_close(block_diagonal, per_head)
    # Both draw q, k, v and then the edge values from the same seed: rebuild them densely.
    from graphdiff.nn import as_graph
    from graphdiff.patterns import Global, Random, Window
    torch.manual_seed(0)
    q, k, v = (torch.randn(heads, n, channels) for _ in range(3))
    graph = as_graph((Window(4) | Global(2) | Random(2, seed=0))(n), (n, n))
    values = torch.rand(heads, graph.num_edges)
    dense = torch.stack([graph.csr(w).to_dense() for w in values])
    torch.testing.assert_close(per_head, dense @ v)
    # hop: one PPR step with alpha = 0.1.
    torch.testing.assert_close(output(bench_layer, "hop", n), 0.9 * (dense @ v) + 0.1 * v)


def test_paired_ratios_are_the_median_per_round_ratio_and_the_fastest_ratio(bench_layer):
    median, fastest = bench_layer.paired_ratios([4.0, 9.0, 5.0], [1.0, 2.0, 2.0])
    assert median == pytest.approx(4.0)  # rounds: 4, 4.5, 2.5
    assert fastest == pytest.approx(4.0)  # 4 / 1


TINY = ["--heads", "2", "--channels", "4", "--window", "4", "--num-global", "2",
        "--num-random", "2"]


def test_tiny_run_writes_table_growth_check_and_raw_times(bench_layer, tmp_path):
    bench_layer.main(["--n", "64", "128", "--variants", "graphdiff", "--repeats", "1",
                      "--growth-rounds", "2", "--pair-rounds", "0", "--out", str(tmp_path),
                      *TINY])
    report = (tmp_path / "bench_layer.md").read_text()
    assert "| 64 |" in report and "| 128 |" in report
    assert "graphdiff time(128) / time(64), interleaved over 2 rounds" in report
    raw = json.loads((tmp_path / "bench_layer.json").read_text())
    assert [len(raw["growth"][n]) for n in ("64", "128")] == [2, 2]
    row = raw["by_n"]["128"]["graphdiff"]
    assert row["fwd"] > 0 and row["bwd"] > 0 and row["peak_mb"] >= 0


def test_hop_is_paired_with_the_bare_spmm_of_smaller_median(bench_layer):
    shape = dict(SHAPE, hops=5)
    ran = {"fwd": 1.0}
    checks, raw = bench_layer.hop_lines(shape, {64: {"hop": ran, "spmm_heads": ran,
                                                     "spmm": {"error": "failed"}},
                                                128: {"hop": {"error": "failed"}}},
                                        rounds=3, timeout=600)
    assert list(raw) == [64] and sorted(raw[64]) == ["hop", "spmm_heads"]
    assert all(len(t) == 3 and min(t) > 0 for t in raw[64].values())
    median, fastest = bench_layer.paired_ratios(raw[64]["hop"], raw[64]["spmm_heads"])
    assert checks == [bench_layer.hop_line(64, "spmm_heads", ", interleaved over 3 rounds",
                                           median, fastest)]


def test_structure_aware_probe_products_equal_the_dense_product():
    probe = load("probe_structured_paths")
    torch.manual_seed(0)
    n, heads, channels = 256, 2, 4
    ways, _ = probe.products(n, heads, channels)
    reference = ways["csr"]().clone()
    for name in ("blocked window + CSR", "dense full rows + CSR"):
        torch.testing.assert_close(ways[name](), reference, rtol=1e-4, atol=1e-4)
