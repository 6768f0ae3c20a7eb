import importlib.util
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("per_class", [300, 400])
def test_sbm_dataset_is_valid(per_class):
    data = load_example().sbm(per_class=per_class)
    masks = data.train_mask.int() + data.val_mask.int() + data.test_mask.int()
    assert masks.min() == 1 and masks.max() == 1  # every node in exactly one split
    assert data.train_mask.sum() == 100 and data.val_mask.sum() == 500
    assert data.test_mask.sum() == 5 * per_class - 600
    assert data.edge_index.max() < data.num_nodes


def test_attention_diffusion_net_learns_karate():
    example = load_example()
    # 30 epochs leave the accuracy anywhere in 0.33-0.67 depending on the dropout masks drawn;
    # after 60 it is 0.67-0.87 for seeds 0-2.
    results = example.run(["karate"], ["AttentionDiffusion"], seeds=[0], epochs=60)
    assert results["karate"]["AttentionDiffusion"][0] > 0.5  # 4 classes: chance is 0.25


@pytest.mark.parametrize(
    "argv, message",
    [(["--epochs", "0"], "must be >= 1"), (["--seeds", "1", "1"], "--seeds must be distinct")],
)
def test_node_classification_example_refuses_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        load_example().main(argv)
    assert message in capsys.readouterr().err
