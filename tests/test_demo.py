"""`make demo` end to end at a toy size: every artefact is written and the table has both models."""

import json

from graphdiff.demo import run_demo


def test_demo_writes_pattern_report_runs_and_summary(tmp_path):
    rows = run_demo(str(tmp_path), n=512, steps=3)
    assert [row["model"] for row in rows] == [
        "Diffuser (K=5, alpha=0.1)",
        "sparse attention (K=1, alpha=0)",
    ]
    assert json.loads((tmp_path / "pattern_512.json").read_text())["global_tokens"] == 64
    for name in (
        "pattern_512.png",
        "analysis/report.md",
        "multihop_k5/best.pt",
        "multihop_k1/metrics.jsonl",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    summary = (tmp_path / "summary.md").read_text()
    assert "| Diffuser (K=5, alpha=0.1) |" in summary and "chance level: 0.10" in summary
    assert "Window(8)" in summary and "9-16 positions from CLS" in summary  # what the task is


def test_cli_demo_keeps_run_demos_defaults(monkeypatch):
    from graphdiff import cli, demo

    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda **kwargs: calls.append(kwargs))
    assert cli.main(["demo"]) == 0 and cli.main(["demo", "--steps", "3", "--n", "64"]) == 0
    assert calls == [{}, {"n": 64, "steps": 3}]


def test_demo_refuses_bad_steps_before_writing_anything(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="steps must be >= 1"):
        run_demo(str(tmp_path / "demo"), n=64, steps=0)
    assert not (tmp_path / "demo").exists()
