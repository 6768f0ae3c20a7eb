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
    if str(BENCHMARKS) not in sys.path:  # the scripts import their shared helpers as scripts do
        sys.path.insert(0, str(BENCHMARKS))
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
    torch.testing.assert_close(
        output(bench_layer, "module"), output(bench_layer, "gather"), rtol=1e-4, atol=1e-5
    )


# A length of its own per variant, used by no other test: its structure is built here.
@pytest.mark.parametrize(
    "variant, n", [("graphdiff", 40), ("module", 41), ("layer", 42), ("hop", 43)]
)
def test_structure_size_includes_the_heads_stack_the_kernels_use(
    bench_layer, variant, n, fresh_cache
):
    from graphdiff.nn import diffusion_graph
    from graphdiff.nn._core import stacks
    from graphdiff.patterns import Global, Random, Window

    edge_index = (Window(4) | Global(2) | Random(2, seed=0))(n)
    diffusion_graph(edge_index, (n, n))  # asked for before: the bench's structure is kept
    bench_layer._setup(variant=variant, n=n, **SHAPE)
    graph = diffusion_graph(edge_index, (n, n))
    stack, calls = stacks(graph, SHAPE["heads"])
    assert calls == 1 and stack is not graph  # both heads in one call at this length
    assert stack._transposed is not None  # built before structure_mb was taken


def test_bare_spmm_variants_and_hop_compute_the_same_product(bench_layer):
    n, heads, channels = 48, SHAPE["heads"], SHAPE["channels"]
    per_head = output(bench_layer, "spmm_heads", n)  # [H, N, C]
    block_diagonal = output(bench_layer, "spmm", n).view(heads, n, channels)
    torch.testing.assert_close(block_diagonal, per_head)
    # Both draw q, k, v and then the edge values from the same seed: rebuild them densely.
    from graphdiff.nn import diffusion_graph
    from graphdiff.patterns import Global, Random, Window

    torch.manual_seed(0)
    q, k, v = (torch.randn(heads, n, channels) for _ in range(3))
    graph = diffusion_graph((Window(4) | Global(2) | Random(2, seed=0))(n), (n, n))
    values = torch.rand(heads, graph.num_edges)
    dense = torch.stack([graph.csr(w).to_dense() for w in values])
    torch.testing.assert_close(per_head, dense @ v)
    # hop: one PPR step with alpha = 0.1.
    hop = output(bench_layer, "hop", n).transpose(0, 1)  # [N, H, C] -> [H, N, C]
    torch.testing.assert_close(hop, 0.9 * (dense @ v) + 0.1 * v)


def test_sdpa_layer_baseline_is_the_diffuser_layer_with_dense_attention(bench_layer):
    from graphdiff.models import DiffuserConfig, DiffuserLayer

    width, heads, n = 16, 4, 11
    config = DiffuserConfig(
        hidden=width,
        heads=heads,
        ffn=4 * width,
        hops=1,
        alpha=0.0,
        dropout=0.0,
        attention_dropout=0.0,
        pattern="Full()",
    )
    layer = DiffuserLayer(config).double()
    dense = load("bench_common").sdpa_transformer_layer(width, heads).double()
    attention = layer.attention
    with torch.no_grad():
        dense.self_attn.in_proj_weight.copy_(
            torch.cat(
                [attention.lin_query.weight, attention.lin_key.weight, attention.lin_value.weight]
            )
        )
        dense.self_attn.in_proj_bias.copy_(
            torch.cat([attention.lin_query.bias, attention.lin_key.bias, attention.lin_value.bias])
        )
        pairs = [
            (dense.self_attn.out_proj, layer.output),
            (dense.linear1, layer.ffn[0]),
            (dense.linear2, layer.ffn[2]),
            (dense.norm1, layer.norm1),
            (dense.norm2, layer.norm2),
        ]
        for target, source in pairs:
            target.weight.copy_(source.weight)
            target.bias.copy_(source.bias)
    x = torch.randn(n, width, dtype=torch.double)
    torch.testing.assert_close(
        dense(x.unsqueeze(0)).squeeze(0), layer(x, config.build_pattern()(n))
    )


def test_memory_workers_return_freed_memory_even_when_timing_reuses_it(bench_layer, monkeypatch):
    for key, value in bench_layer.REUSE_FREED_MEMORY.items():
        monkeypatch.setenv(key, value)  # what --reuse-freed-memory sets for the workers
    timing, memory = bench_layer.worker_env("time"), bench_layer.worker_env("memory")
    assert {k: timing[k] for k in bench_layer.REUSE_FREED_MEMORY} == bench_layer.REUSE_FREED_MEMORY
    assert not set(bench_layer.REUSE_FREED_MEMORY) & set(memory)
    assert memory["MALLOC_MMAP_THRESHOLD_"] == str(128 * 1024)


def test_alternate_rotates_the_order_and_times_every_run_each_round():
    common = load("bench_common")
    order = []
    times = common.alternate({key: (lambda key=key: order.append(key)) for key in "abc"}, rounds=3)
    assert order == list("abcbcacab")
    assert {key: len(t) for key, t in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert (
        common.growth_row("x", [0.002, 0.001, 0.003], [0.004, 0.009, 0.0045])
        == "| x | 1.0 | 4.0 | 4.00 | 2.25 |"
    )  # fastest 4 / 1; median 4.5 / 2


def test_paired_ratios_are_the_median_per_round_ratio_and_the_fastest_ratio(bench_layer):
    median, fastest = bench_layer.paired_ratios([4.0, 9.0, 5.0], [1.0, 2.0, 2.0])
    assert median == pytest.approx(4.0)  # rounds: 4, 4.5, 2.5
    assert fastest == pytest.approx(4.0)  # 4 / 1


def test_targets_check_the_layer_against_the_dense_layer_and_each_variants_growth(bench_layer):
    def ran(total: float, fastest: float) -> dict:
        return {"fwd": total / 4, "bwd": 3 * total / 4, "fastest": fastest, "peak_mb": 1.0}

    results = {
        16: {
            "graphdiff": ran(1.0, 1.0),
            "module": ran(2.0, 2.0),
            "layer": ran(3.0, 3.0),
            "sdpa": ran(10.0, 10.0),
            "sdpa_layer": ran(12.0, 12.0),
        },
        64: {
            "graphdiff": ran(4.4, 4.0),
            "module": ran(8.0, 7.0),
            "layer": ran(16.0, 15.0),
            "sdpa_layer": {"skipped": "skipped above n=16"},
        },
    }
    lines = bench_layer.targets(results)
    assert "n=16: Diffuser layer / SDPA transformer layer, fwd+bwd = 0.25" in lines
    assert ["n=16: Diffuser layer / module = 1.50", "n=64: Diffuser layer / module = 2.00"] == [
        line for line in lines if "Diffuser layer / module" in line
    ]
    assert not any(line.startswith("n=64: Diffuser layer / SDPA") for line in lines)
    assert [line for line in lines if "time(64) / time(16)" in line] == [
        f"{variant} time(64) / time(16), separate processes = {median} median, {fastest} "
        "fastest (linear: 4.0; target <= 4.5)"
        for variant, median, fastest in [
            ("graphdiff", "4.40", "4.00"),
            ("module", "4.00", "3.50"),
            ("layer", "5.33", "5.00"),
        ]
    ]
    rows = {
        line.split(" | ")[1]: line.split(" | ")[-1]
        for line in bench_layer.table(results, ["graphdiff", "layer", "sdpa_layer"]).splitlines()
        if line.startswith("| 16 |")
    }
    # "vs dense": the core against SDPA, a layer against the SDPA layer.
    assert rows == {"graphdiff": "0.10x |", "layer": "0.25x |", "sdpa_layer": "1.00x |"}


def test_targets_of_one_length_are_printed_at_that_length_only(bench_layer):
    ran = {"fwd": 0.25, "bwd": 0.75, "fastest": 1.0, "peak_mb": 300.0}
    results = {
        n: {"graphdiff": ran, "layer": ran, "sdpa_layer": dict(ran, fwd=1.75)}
        for n in (4096, 16384, 65536)
    }
    lines = [line for line in bench_layer.targets(results) if line.startswith("n=")]
    assert lines == [
        "n=4096: graphdiff peak extra memory = 300 MB",
        "n=4096: Diffuser layer / SDPA transformer layer, fwd+bwd = 0.40",
        "n=16384: graphdiff peak extra memory = 300 MB (target <= 550)",
        "n=16384: Diffuser layer / SDPA transformer layer, fwd+bwd = 0.40 (target <= 0.5)",
        "n=65536: graphdiff peak extra memory = 300 MB",
        "n=65536: Diffuser layer / SDPA transformer layer, fwd+bwd = 0.40",
    ]


def test_a_failed_interleaved_growth_loses_only_its_own_variant(bench_layer, monkeypatch):
    def run_interleaved(shape, workloads, rounds, timeout):
        if workloads[0][0] == "layer":
            raise RuntimeError("exit 137: killed")
        assert workloads == [
            ("graphdiff", 64),
            ("graphdiff", 256),
            ("spmm_heads", 64),
            ("spmm_heads", 256),
        ]
        return {
            ("graphdiff", 64): [1.0, 2.0, 1.0],
            ("graphdiff", 256): [4.0, 10.0, 5.0],
            ("spmm_heads", 64): [0.1, 0.1, 0.2],
            ("spmm_heads", 256): [0.5, 0.4, 0.6],
        }

    monkeypatch.setattr(bench_layer, "run_interleaved", run_interleaved)
    checks, growth = bench_layer.growth_lines(
        SHAPE, {"graphdiff": [64, 256], "layer": [64, 256]}, rounds=3, timeout=1
    )
    # Per round, graphdiff grows 4, 5 and 5, the SpMM 5, 4 and 3: relative 0.8, 1.25, 1.67.
    assert checks == [
        "graphdiff time(256) / time(64), interleaved over 3 rounds = 5.00 median, 4.00 fastest "
        "(linear: 4.0; target <= 4.5)",
        "spmm_heads (bare CSR SpMM, one per head) time(256) / time(64), same rounds = 4.00 "
        "median, 4.00 fastest; graphdiff growth / spmm_heads growth = 1.25 median",
        "layer: interleaved growth measurement failed: exit 137: killed",
    ]
    assert growth == {
        "graphdiff": {64: [1.0, 2.0, 1.0], 256: [4.0, 10.0, 5.0]},
        "spmm_heads": {64: [0.1, 0.1, 0.2], 256: [0.5, 0.4, 0.6]},
    }


TINY = [
    "--heads",
    "2",
    "--channels",
    "4",
    "--window",
    "4",
    "--num-global",
    "2",
    "--num-random",
    "2",
]


def test_tiny_run_writes_table_growth_check_and_raw_times(bench_layer, tmp_path):
    bench_layer.main(
        [
            "--n",
            "64",
            "128",
            "--variants",
            "graphdiff",
            "--repeats",
            "1",
            "--growth-rounds",
            "2",
            "--pair-rounds",
            "0",
            "--out",
            str(tmp_path),
            "--plot",
            *TINY,
        ]
    )
    assert (tmp_path / "bench_layer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "bench_layer.md").read_text()
    assert "| 64 |" in report and "| 128 |" in report
    assert "graphdiff time(128) / time(64), interleaved over 2 rounds" in report
    raw = json.loads((tmp_path / "bench_layer.json").read_text())
    assert "spmm_heads (bare CSR SpMM, one per head) time(128) / time(64), same rounds" in report
    assert list(raw["growth"]) == ["graphdiff", "spmm_heads"]  # the layer did not run
    assert [len(raw["growth"][name][n]) for name in raw["growth"] for n in ("64", "128")] == [
        2,
        2,
        2,
        2,
    ]
    row = raw["by_n"]["128"]["graphdiff"]
    assert row["fwd"] > 0 and row["bwd"] > 0 and row["peak_mb"] >= 0


def test_growth_of_core_and_layer_is_interleaved_per_variant(bench_layer):
    lengths = {"graphdiff": [64, 128], "layer": [64, 128, 256]}
    checks, growth = bench_layer.growth_lines(SHAPE, lengths, rounds=2, timeout=600)
    assert {variant: sorted(by_n) for variant, by_n in growth.items()} == dict(
        lengths, spmm_heads=[64, 128]
    )
    assert all(len(t) == 2 and min(t) > 0 for by_n in growth.values() for t in by_n.values())
    assert [line.split(" =")[0] for line in checks] == [
        "graphdiff time(128) / time(64), interleaved over 2 rounds",
        "spmm_heads (bare CSR SpMM, one per head) time(128) / time(64), same rounds",
        "layer time(128) / time(64), interleaved over 2 rounds",
        "layer time(256) / time(128), interleaved over 2 rounds",
    ]
    median, _ = bench_layer.paired_ratios(growth["layer"][256], growth["layer"][128])
    assert f"= {median:.2f} median" in checks[3]


def test_hop_is_paired_with_the_bare_spmm_of_smaller_median(bench_layer):
    shape = dict(SHAPE, hops=5)
    ran = {"fwd": 1.0}
    checks, raw = bench_layer.hop_lines(
        shape,
        {
            64: {"hop": ran, "spmm_heads": ran, "spmm": {"error": "failed"}},
            128: {"hop": {"error": "failed"}},
        },
        rounds=3,
        timeout=600,
    )
    assert list(raw) == [64] and sorted(raw[64]) == ["hop", "spmm_heads"]
    assert all(len(t) == 3 and min(t) > 0 for t in raw[64].values())
    median, fastest = bench_layer.paired_ratios(raw[64]["hop"], raw[64]["spmm_heads"])
    assert checks == [
        bench_layer.hop_line(64, "spmm_heads", ", interleaved over 3 rounds", median, fastest)
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["--n", "0"],
        ["--n", "64", "-4"],
        ["--heads", "0"],
        ["--channels", "-1"],
        ["--hops", "0"],
        ["--window", "0"],
        ["--timeout", "0"],
        ["--variants", "dense"],
        ["--plot"],
    ],
)  # --plot without --out
def test_bench_layer_refuses_bad_arguments_before_running_anything(bench_layer, monkeypatch, argv):
    monkeypatch.setattr(bench_layer, "run_one", lambda spec, timeout: pytest.fail("ran"))
    with pytest.raises(SystemExit) as exit_:
        bench_layer.main(["--growth-rounds", "0", "--pair-rounds", "0", *argv])
    assert exit_.value.code == 2  # argparse's usage error


@pytest.mark.parametrize(
    "argv, lengths, repeats",
    [
        (["--quick"], [256, 1024], 2),
        (["--quick", "--n", "64", "--repeats", "1"], [64], 1),
        (["--n", "64"], [64], 3),
    ],
)
def test_quick_sets_only_the_lengths_and_repeats_not_given(
    bench_layer, monkeypatch, argv, lengths, repeats
):
    specs = []
    monkeypatch.setattr(
        bench_layer,
        "run_one",
        lambda spec, timeout: (
            specs.append(spec) or {"fwd": 1.0, "bwd": 1.0, "fastest": 2.0, "peak_mb": 1.0}
        ),
    )
    bench_layer.main([*argv, "--variants", "sdpa", "--growth-rounds", "0", "--pair-rounds", "0"])
    assert [(spec["n"], spec["repeats"]) for spec in specs] == [(n, repeats) for n in lengths]


@pytest.mark.parametrize(
    "script, argv",
    [
        ("bench_patterns", ["--lengths", "0"]),
        ("bench_spectral", ["--n", "-64"]),
        ("bench_model", ["--steps", "0"]),
        ("bench_model", ["--length", "0"]),
        ("bench_memory", ["--steps", "0"]),
        ("bench_memory", ["--trim-every", "-1"]),
        ("bench_memory", ["--min-len", "9", "--max-len", "8"]),
    ],
)
def test_scripts_refuse_non_positive_sizes(script, argv):
    with pytest.raises(SystemExit) as exit_:
        load(script).main(argv)
    assert exit_.value.code == 2  # argparse's usage error, before any work


def test_tiny_runs_of_the_readme_commands_print_and_write_their_tables(tmp_path, capsys):
    load("bench_patterns").main(["--lengths", "64", "--patterns", "diffuser"])
    assert "| `diffuser` | 64 |" in capsys.readouterr().out
    load("bench_spectral").main(["--n", "64"])
    assert "| 64 |" in capsys.readouterr().out
    load("bench_model").main(
        [
            "--preset",
            "tiny",
            "--length",
            "64",
            "--batch",
            "1",
            "--steps",
            "1",
            "--out",
            str(tmp_path / "model.md"),
        ]
    )
    model = (tmp_path / "model.md").read_text()
    assert [line.split(" | ")[0] for line in model.splitlines() if line.startswith("| ")][1:] == [
        "| default (fused)",
        "| sparse attention only (K=1)",
        "| gather-scatter reference",
    ]


def test_bench_memory_trims_as_asked_and_checks_its_limit(monkeypatch, capsys):
    bench_memory = load("bench_memory")
    calls = []
    monkeypatch.setattr("graphdiff.train.release_free_memory", lambda: calls.append(1))
    argv = ["--steps", "4", "--min-len", "8", "--max-len", "24", "--every", "2"]
    assert bench_memory.main([*argv, "--trim-every", "2", "--limit-mb", "100000"]) == 0
    assert len(calls) == 2  # steps 2 and 4
    assert bench_memory.main([*argv, "--trim-every", "0", "--limit-mb", "1"]) == 1
    assert len(calls) == 2
    out = capsys.readouterr().out
    assert "step     4  RSS" in out and "OVER the limit of 1 MiB" in out
