"""A quick bench run end to end on the default model, on a small slice of CAA refusal, through the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from steerlab.cli.app import app
from steerlab.vector import Vector

CONDITIONS = {"unsteered", "steering", "prompting", "fewshot", "lora", "steering+prompting"}


@pytest.mark.slow
def test_adhoc_ab_bench_writes_results_report_and_calibrated_vector(datasets, tmp_path):
    caa = datasets / "caa"
    train = json.loads((caa / "generate" / "refusal" / "generate_dataset.json").read_text())[:8]
    test = json.loads((caa / "test" / "refusal" / "test_dataset_ab.json").read_text())[:4]
    (tmp_path / "train.json").write_text(json.dumps(train))
    (tmp_path / "test.json").write_text(json.dumps(test))
    out = tmp_path / "out"
    args = ["bench", "--task", "ab", "--pairs", str(tmp_path / "train.json"), "--eval", str(tmp_path / "test.json")]
    args += ["--out", str(out), "--max-pairs", "6", "--val-size", "2", "--quick", "--scales", "0.5"]
    args += ["--gen-tokens", "6", "--n-fluency", "2"]
    args += ["--instruction", "Decline what you should not do."]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "results.json").read_text())
    rows = doc["rows"]
    assert {r["condition"] for r in rows} == CONDITIONS | {"steering@-0.5", "steering@0.5"}
    for r in rows:
        assert set(r) == {"task", "condition", "metric", "value", "ci", "n"}
        if r["value"] is not None:
            assert r["ci"][0] <= r["value"] + 1e-9 <= r["ci"][1] + 2e-9
    p_match = {r["condition"]: r for r in rows if r["metric"] == "p_match"}
    assert all(0.0 <= r["value"] <= 1.0 and r["n"] == 4 for r in p_match.values())
    cal = doc["calibration"]
    assert cal["scale"] == 0.5 and len(cal["layers"]) == 5
    vec = Vector.load(out / "train" / "vector.safetensors")
    assert vec.card.recommended_layers == cal["layers"] and vec.card.recommended_scale == cal["scale"]
    assert doc["tasks"][0]["costs"]["lora_train_s"] > 0
    for name in ("report.md", "report.html", "train/metric_vs_scale.png", "train/conditions.png"):
        assert (out / name).stat().st_size > 0
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_bench_cli_rejects_missing_inputs(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "say what to run" in str(result.exception)
