"""Smoke test of experiments/compare_attention.py: its --quick sweep runs, writes and resumes."""

import importlib.util
import json
import os
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "compare_attention.py"


def load_script():
    spec = importlib.util.spec_from_file_location("compare_attention", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_sweep_writes_table_and_resumes(tmp_path):
    script = load_script()
    argv = ["--quick", "--variants", "diffuser", "dense", "--out", str(tmp_path)]
    summary = script.main(argv)
    assert [(row["task"], row["variant"]) for row in summary["rows"]] == [
        ("multihop", "diffuser"),
        ("multihop", "dense"),
        ("listops", "diffuser"),
        ("listops", "dense"),
    ]
    for row in summary["rows"]:
        assert 0.0 <= row["mean"] <= 1.0 and row["tokens_per_second"] > 0
    table = (tmp_path / "results.md").read_text()
    assert "| multihop | diffuser |" in table and "majority class" in table
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == summary["rows"]
    result = tmp_path / "runs" / "listops" / "dense" / "seed0" / "result.json"
    stamp = os.stat(result).st_mtime_ns
    again = script.main(argv)  # every run is recorded: nothing trains again
    assert os.stat(result).st_mtime_ns == stamp
    assert again["runs"] == summary["runs"]


def test_bad_arguments_are_usage_errors_and_quick_keeps_explicit_settings(
    tmp_path, capsys, monkeypatch
):
    import pytest

    script = load_script()
    for bad, message in (
        (["--threads", "0"], "must be >= 1"),
        (["--lr", "-1"], "must be > 0"),
        (["--seeds", "0", "0"], "--seeds must be distinct"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            script.main(["--quick", *bad, "--out", str(tmp_path)])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err

    class FirstJob(Exception):
        pass

    def stop_at_first_job(variant, job):
        raise FirstJob(job)

    monkeypatch.setattr(script, "run_one", stop_at_first_job)
    with pytest.raises(FirstJob) as first:  # the first job shows the settings it was given
        script.main(
            [
                "--quick",
                "--seeds",
                "3",
                "--steps",
                "7",
                "--variants",
                "dense",
                "--tasks",
                "multihop",
                "--out",
                str(tmp_path),
            ]
        )
    job = first.value.args[0]
    assert (job.seed, job.max_steps) == (3, 7)
