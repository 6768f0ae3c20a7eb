"""The benchmark scripts measure what they claim: their variants compute the same products
as independent references, their ratios follow their definitions, and a tiny run writes its
report."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from graphdiff.patterns import parse_pattern

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


def test_the_core_with_dense_parts_computes_what_the_csr_core_does(bench_layer, monkeypatch):
    from graphdiff.nn import diffusion_graph
    from graphdiff.nn import graph as graph_module
    from graphdiff.patterns import Global, Random, Window

    monkeypatch.setattr(graph_module, "MIN_DENSE_EDGES", 0)
    shape = {**SHAPE, "window": 64}  # a sliding window of 65 holds a band of blocks of 16
    graph = diffusion_graph((Window(64) | Global(2) | Random(2, seed=0))(160), (160, 160))
    assert (graph.band, graph.num_global) == (16, 2)
    outputs = []
    for variant in ("graphdiff", "graphdiff_csr"):
        forward, _, _ = bench_layer._setup(variant=variant, n=160, **shape)
        with torch.no_grad():
            outputs.append(forward())
    torch.testing.assert_close(*outputs)


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
    from graphdiff.nn import DiffusionGraph
    from graphdiff.patterns import Global, Random, Window

    torch.manual_seed(0)
    q, k, v = (torch.randn(heads, n, channels) for _ in range(3))
    # The plain CSR of the pattern (in its edge order, which hop's attention follows).
    ei = (Window(4) | Global(2) | Random(2, seed=0))(n)
    graph = DiffusionGraph(ei[0], ei[1], (n, n), find_dense=False)
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
    times = common.alternate(
        {key: (lambda key=key: order.append(key)) for key in "abc"},
        rounds=3,
        after_round=lambda round_: order.append(round_),
    )
    assert order == [*"abc", 1, *"bca", 2, *"cab", 3]
    assert {key: len(t) for key, t in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert (
        common.growth_row("x", [0.002, 0.001, 0.003], [0.004, 0.009, 0.0045])
        == "| x | 1.0 | 4.0 | 4.00 | 2.25 |"
    )  # fastest 4 / 1; median 4.5 / 2


def test_paired_ratios_are_the_median_per_round_ratio_and_the_fastest_ratio():
    median, fastest = load("bench_common").paired_ratios([4.0, 9.0, 5.0], [1.0, 2.0, 2.0])
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
        "median, 4.00 fastest; graphdiff growth / spmm_heads growth = 1.25 median "
        "(target <= 1.25)",
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
        ("bench_model", ["--length", "64", "-1"]),
        ("bench_model", ["--savers", "--steps", "0"]),
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
    assert [line.split(" | ")[1] for line in model.splitlines() if line.startswith("| 64 ")] == [
        "graphdiff K=5",
        "graphdiff K=1",
        "graphdiff K=5, gather-scatter reference",
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


# ------------------------------------------------------------------------- bench_model


@pytest.fixture(scope="module")
def bench_model():
    return load("bench_model")


def table_rows(text: str, first_column: str) -> list:
    """The cells of the markdown rows whose first cell is ``first_column``."""
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith(f"| {first_column} |")
    ]


def test_peers_are_graphdiffs_model_with_their_own_attention(bench_model):
    variants = bench_model.compare_variants("tiny", 128, batch=1, reference=False, peers=True)
    size = {
        name: sum(p.numel() for p in model.parameters()) for name, (model, _) in variants.items()
    }
    config = bench_model.model_config("tiny", 128)
    d, layers = config.hidden, config.layers
    # RoBERTa: graphdiff's weights plus two positions (its offset) and one token type.
    assert size["HF RoBERTa, SDPA"] - size["graphdiff K=5"] == 3 * d
    # Longformer: RoBERTa plus each layer's query, key and value for global attention.
    assert size["HF Longformer"] - size["HF RoBERTa, SDPA"] == layers * 3 * (d * d + d)
    # BigBird: BERT's unused pooler, positions without RoBERTa's offset of two.
    assert size["HF BigBird"] - size["HF RoBERTa, SDPA"] == d * d + d - 2 * d
    window, num_global, _ = bench_model.pattern_sizes(config)
    assert variants["HF Longformer"][0].config.attention_window == [window] * layers
    bigbird = variants["HF BigBird"][0].config
    assert (bigbird.block_size, bigbird.num_random_blocks) == (window, 1)
    assert variants["HF RoBERTa, SDPA"][0].config._attn_implementation == "sdpa"
    # graphdiff on Longformer's edges: the same weights, the window and global tokens given
    # to HF Longformer (query i attends j when |i - j| <= window / 2, and the global tokens).
    on_longformer = variants[bench_model.LONGFORMER_PATTERN][0].diffuser.pattern
    assert size[bench_model.LONGFORMER_PATTERN] == size["graphdiff K=5"]
    dense = on_longformer.to_dense(128).bool()
    i, j = torch.meshgrid(torch.arange(128), torch.arange(128), indexing="ij")
    expected = ((i - j).abs() <= window // 2) | (i < num_global) | (j < num_global)
    assert torch.equal(dense, expected)
    for model, forward in variants.values():
        assert forward().shape == (1, config.num_classes)


def test_pattern_sizes_read_the_presets_and_refuse_other_patterns(bench_model):
    from graphdiff.models import preset_config

    assert bench_model.pattern_sizes(preset_config("small")) == (64, 8, 8)
    assert bench_model.pattern_sizes(preset_config("paper_base")) == (64, 64, 64)
    for pattern in ("bigbird()", "Window(8) | Global(2)", "longformer(window=8)"):
        with pytest.raises(ValueError, match="--peers needs a pattern"):
            bench_model.pattern_sizes(preset_config("tiny", pattern=pattern))


def test_compare_rows_give_median_rates_and_median_per_step_ratios(bench_model):
    times = {bench_model.BASELINE: [1.0, 2.0, 1.0], "x": [0.5, 4.0, 0.5]}
    assert bench_model.compare_rows(100, 2, times) == [
        "| 100 | graphdiff K=5 | 200 | 1.00 |",  # 200 tokens over the median second
        "| 100 | x | 400 | 2.00 |",  # steps 2, 0.5 and 2 times as fast
    ]


def test_peers_run_against_graphdiff_and_their_ratios_follow_the_rates(bench_model, tmp_path):
    out = tmp_path / "peers.md"
    argv = ["--preset", "tiny", "--length", "128", "--steps", "1", "--skip-reference"]
    bench_model.main([*argv, "--peers", "--out", str(out)])
    rows = table_rows(out.read_text(), "128")
    assert [row[1] for row in rows] == [
        "graphdiff K=5",
        "graphdiff K=1",
        "graphdiff K=5, Longformer's pattern",
        "HF Longformer",
        "HF BigBird",
        "HF RoBERTa, SDPA",
    ]
    rates = [float(row[2].replace(",", "")) for row in rows]
    for rate, row in zip(rates, rows):  # one step: the ratio is the ratio of the rates
        assert float(row[3]) == pytest.approx(rate / rates[0], abs=0.01 + 1 / rates[0])
    assert "fell back to full attention" not in out.read_text()  # 128 > (5 + 2) 16 tokens
    # The two patterns' sizes (tiny: diffuser(window=16, num_global=1, num_random=4) against
    # Window(16) | Global(1)).
    config = bench_model.model_config("tiny", 128)
    edges = [
        config.build_pattern().num_edges(128) / 128,
        parse_pattern("Window(16) | Global(1)").num_edges(128) / 128,
    ]
    assert (
        f"128 tokens: edges per token: graphdiff K=5 {edges[0]:.1f}, "
        f"graphdiff K=5, Longformer's pattern {edges[1]:.1f}"
    ) in out.read_text()


def test_peers_are_skipped_with_a_reason_without_transformers(bench_model, monkeypatch, capsys):
    monkeypatch.setattr(bench_model, "transformers_version", lambda: None)
    argv = ["--preset", "tiny", "--length", "32", "--steps", "1", "--skip-reference", "--peers"]
    bench_model.main(argv)
    out = capsys.readouterr().out
    assert "transformers is not installed" in out and "rows of HF" in out
    assert [row[1] for row in table_rows(out, "32")] == ["graphdiff K=5", "graphdiff K=1"]


def test_training_step_is_one_adamw_step_on_the_cross_entropy(bench_model):
    config = bench_model.model_config("tiny", 16, dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(0)
    tokens, mask = bench_model.random_batch(config, 2)
    model, forward = bench_model.graphdiff_variant(config, tokens, mask)
    expected = load("bench_model").Classifier(config).train()
    expected.load_state_dict(model.state_dict())
    optimizer = torch.optim.AdamW(expected.parameters(), lr=1e-4)
    torch.nn.functional.cross_entropy(expected(tokens, mask), torch.zeros(2).long()).backward()
    optimizer.step()
    bench_model.training_step(model, forward, 2)()
    for got, want in zip(model.parameters(), expected.parameters()):
        torch.testing.assert_close(got, want)
    dtypes = []
    record = lambda: dtypes.append(forward().dtype) or forward()  # noqa: E731
    bench_model.training_step(model, record, 2, bf16=True)()
    bench_model.training_step(model, record, 2, bf16=False)()
    assert dtypes == [torch.bfloat16, torch.float32]


def test_saver_rows_compare_each_variant_with_fp32(bench_model):
    results = {
        "fp32": {"step_s": [2.0, 4.0], "peak_mb": 1000.0, "before_mb": 400.0},
        "checkpointing": {"step_s": [4.0, 4.0, 5.0], "peak_mb": 500.0, "before_mb": 400.0},
        "bf16": {"error": "killed by signal 9 (out of memory?)"},
    }
    assert bench_model.saver_rows("small", 1000, 2, results) == [
        "| small | 1,000 | fp32 | 667 | 3.00 | 1,000 | 600 | 1.00 | 1.00 |",
        "| small | 1,000 | gradient checkpointing | 500 | 4.00 | 500 | 100 | 0.75 | 0.50 |",
        "| small | 1,000 | bf16 autocast | failed: killed by signal 9 (out of memory?) | - | - | "
        "- | - | - |",
    ]
    without_fp32 = bench_model.saver_rows("small", 1000, 2, {"bf16": results["checkpointing"]})
    assert without_fp32[0].endswith("| 500 | 100 | - | - |")


@pytest.mark.parametrize(
    "argv, plan",
    [
        (
            [],
            [
                ("paper_base", 4096, ["fp32", "checkpointing", "bf16", "checkpointing+bf16"]),
                ("small", 16384, ["fp32", "checkpointing", "bf16", "checkpointing+bf16"]),
                ("paper_base", 16384, ["checkpointing", "checkpointing+bf16"]),
            ],
        ),
        (
            ["fp32", "bf16"],
            [("paper_base", 4096, ["fp32", "bf16"]), ("small", 16384, ["fp32", "bf16"])],
        ),
        (
            ["checkpointing", "--preset", "tiny", "--length", "8", "16"],
            [("tiny", 8, ["checkpointing"]), ("tiny", 16, ["checkpointing"])],
        ),
    ],
)
def test_savers_run_the_default_rows_or_the_given_ones(bench_model, monkeypatch, argv, plan):
    specs = []
    monkeypatch.setattr(
        bench_model, "run_saver", lambda spec, timeout: specs.append(spec) or {"error": "not run"}
    )
    bench_model.main(["--savers", *argv])
    ran = [(spec["preset"], spec["length"], spec["saver"]) for spec in specs]
    assert ran == [(preset, length, saver) for preset, length, savers in plan for saver in savers]
    assert {(spec["steps"], spec["batch"]) for spec in specs} == {(2, 1)}


@pytest.mark.slow  # two fresh processes that import torch
def test_each_saver_runs_in_a_fresh_process_and_reports_its_peak(bench_model, tmp_path):
    out = tmp_path / "savers.md"
    argv = ["--savers", "fp32", "checkpointing+bf16", "--preset", "tiny", "--length", "32"]
    bench_model.main([*argv, "--steps", "1", "--out", str(out)])
    rows = table_rows(out.read_text(), "tiny")
    assert [row[2] for row in rows] == ["fp32", "checkpointing + bf16"]
    (fp32_rate, fp32_step, fp32_peak, fp32_extra), (rate, step, peak, extra) = [
        [float(cell.replace(",", "")) for cell in row[3:7]] for row in rows
    ]
    # Seconds are rounded to 0.01, tokens / s to 1, ratios to 0.01.
    for one_rate, one_step in [(fp32_rate, fp32_step), (rate, step)]:
        assert 32 / (one_step + 0.005) - 0.5 <= one_rate <= 32 / (one_step - 0.005) + 0.5
    low, high = (fp32_step - 0.005) / (step + 0.005), (fp32_step + 0.005) / (step - 0.005)
    assert low - 0.005 <= float(rows[1][7]) <= high + 0.005
    assert rows[0][7:] == ["1.00", "1.00"]
    assert float(rows[1][8]) == pytest.approx(peak / fp32_peak, abs=0.01)
    assert 0 <= fp32_extra < fp32_peak and 0 <= extra < peak  # torch itself is resident


def test_a_saver_process_that_is_killed_fails_its_row_only(bench_model, monkeypatch):
    completed = subprocess.CompletedProcess(args=[], returncode=-9, stdout="")
    monkeypatch.setattr(bench_model.subprocess, "run", lambda *args, **kwargs: completed)
    assert bench_model.run_saver({}, timeout=1) == {"error": "killed by signal 9 (out of memory?)"}


@pytest.mark.parametrize(
    "argv",
    [
        ["--savers", "--peers"],
        ["--savers", "--skip-reference"],
        ["--savers", "fp16"],
        ["--preset", "huge"],
    ],
)
def test_bench_model_refuses_bad_arguments(bench_model, monkeypatch, argv):
    monkeypatch.setattr(bench_model, "run_saver", lambda spec, timeout: pytest.fail("ran"))
    with pytest.raises(SystemExit) as exit_:
        bench_model.main(argv)
    assert exit_.value.code == 2


def test_profile_puts_each_op_in_the_part_of_its_module(bench_model):
    # Forward ops by the module they ran in, backward ops by the forward op that made their
    # autograd node: the graphdiff kernels and their gradients in "attention kernels", the
    # GELU and its gradient in "feed-forward", the layers' LayerNorms (forward and backward)
    # in "norms, residuals, dropout" but the embeddings' in "embeddings", AdamW in "optimizer".
    config = bench_model.model_config("tiny", 64, attention_dropout=0.0)
    torch.manual_seed(0)
    tokens, mask = bench_model.random_batch(config, 1)
    model, forward = bench_model.graphdiff_variant(config, tokens, mask)
    step = bench_model.training_step(model, forward, 1)
    step()
    parts: dict = {}
    attributed = bench_model.attribute_events(bench_model.profile_events(model, step, 1))
    for event, part in attributed:
        parts.setdefault(event.name, []).append(part)
    kernels = [name for name in parts if name.startswith("graphdiff::")]
    assert len(kernels) == 4  # the attention and the diffusion, and their backward ops
    assert all(set(parts[name]) == {"attention kernels"} for name in kernels)
    for name in ("aten::gelu", "aten::gelu_backward"):
        assert set(parts[name]) == {"feed-forward"}
    layers = config.layers
    for name in ("aten::native_layer_norm", "aten::native_layer_norm_backward"):
        assert sorted(parts[name]) == sorted(
            ["embeddings"] + ["norms, residuals, dropout"] * 2 * layers
        )
    in_optimizer = [
        part
        for event, part in attributed
        if any(a.name.startswith("Optimizer.step") for a in bench_model.ancestors(event))
    ]
    assert in_optimizer and set(in_optimizer) == {"optimizer"}
    assert "prepare" not in vars(model.diffuser)  # the marks are gone


def test_compiled_variant_steps_as_the_eager_model(bench_model):
    """Inductor with COMPILE_OPTIONS: dropout draws the eager model's masks from the same
    seed, so a training step gives the same parameters."""
    config = bench_model.model_config("tiny", 16, layers=1, dropout=0.2, attention_dropout=0.0)
    torch.manual_seed(0)
    tokens, mask = bench_model.random_batch(config, 2)
    torch.manual_seed(1)
    model, forward = bench_model.graphdiff_variant(config, tokens, mask)
    torch.manual_seed(1)
    compiled, compiled_forward = bench_model.compiled_variant(config, tokens, mask)
    torch.manual_seed(2)
    bench_model.training_step(model, forward, 2)()
    torch.manual_seed(2)
    bench_model.training_step(compiled, compiled_forward, 2)()
    for got, want in zip(compiled.parameters(), model.parameters()):
        torch.testing.assert_close(got, want)
