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
    table = example.main(["--epochs", "2", "--seeds", "0", "1", "--datasets", "karate"])
    for name in ("AttentionDiffusion", "GATConv", "TransformerConv", "APPNP", "karate"):
        assert name in table
    assert "+-" in table


def test_sbm_dataset_is_valid():
    data = load_example().sbm()
    masks = data.train_mask.int() + data.val_mask.int() + data.test_mask.int()
    assert masks.max() == 1 and data.train_mask.sum() == 100 and data.test_mask.sum() == 900
    assert data.edge_index.max() < data.num_nodes


def test_attention_diffusion_net_learns_karate():
    example = load_example()
    results = example.run(["karate"], ["AttentionDiffusion"], seeds=[0], epochs=30)
    assert results["karate"]["AttentionDiffusion"][0] > 0.5  # 4 classes: chance is 0.25
