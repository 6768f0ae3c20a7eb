import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node_classification.py"


def load_example():
    spec = importlib.util.spec_from_file_location("node_classification", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_node_classification_example_short_run():
    example = load_example()
    table = example.main(["--epochs", "3", "--seeds", "0", "1"])
    for name in ("AttentionDiffusion", "GATConv", "TransformerConv", "APPNP", "karate", "sbm"):
        assert name in table
    assert "+-" in table


def test_attention_diffusion_net_learns_karate():
    example = load_example()
    results = example.run(["karate"], ["AttentionDiffusion"], seeds=[0], epochs=60)
    assert results["karate"]["AttentionDiffusion"][0] > 0.5  # 4 classes: chance is 0.25
