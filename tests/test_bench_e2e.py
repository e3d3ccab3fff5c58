"""A quick bench run end to end on the default model, on a small slice of CAA refusal, through the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from steerlab.cli.app import app
from steerlab.vector import Vector

CONDITIONS = {"unsteered", "steering", "prompting", "fewshot", "lora", "finetune", "steering+prompting"}


def _adhoc_refusal_args(datasets, tmp_path, out):
    """A quick ad-hoc A/B run on 8 CAA refusal generate items (6 train, 2 validation) and 4 test items."""
    caa = datasets / "caa"
    train = json.loads((caa / "generate" / "refusal" / "generate_dataset.json").read_text())[:8]
    test = json.loads((caa / "test" / "refusal" / "test_dataset_ab.json").read_text())[:4]
    (tmp_path / "train.json").write_text(json.dumps(train))
    (tmp_path / "test.json").write_text(json.dumps(test))
    args = ["bench", "--task", "ab", "--pairs", str(tmp_path / "train.json"), "--eval", str(tmp_path / "test.json")]
    return [*args, "--out", str(out), "--max-pairs", "6", "--val-size", "2", "--quick", "--scales", "0.5"]


@pytest.mark.slow
def test_adhoc_ab_bench_with_two_methods_writes_results_report_and_calibrated_vectors(datasets, tmp_path):
    """One default-model run serves both checks (the default-model runs are the slow part): the legacy shape of the
    first method's `steering` condition, and `--methods` adding `steering:preference` with its own calibration."""
    out = tmp_path / "out"
    args = _adhoc_refusal_args(datasets, tmp_path, out)
    args += ["--gen-tokens", "4", "--n-fluency", "2", "--methods", "mean_diff,preference"]
    args += ["--instruction", "Decline what you should not do."]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "results.json").read_text())
    rows = doc["rows"]
    assert {r["condition"] for r in rows} == CONDITIONS | {"steering:preference", "steering@-0.5", "steering@0.5"}
    for r in rows:
        assert set(r) == {"task", "condition", "metric", "value", "ci", "n"}
        if r["value"] is not None:
            assert r["ci"][0] <= r["value"] + 1e-9 <= r["ci"][1] + 2e-9
    p_match = {r["condition"]: r for r in rows if r["metric"] == "p_match"}
    assert all(0.0 <= r["value"] <= 1.0 and r["n"] == 4 for r in p_match.values())
    cal = doc["calibration"]
    assert cal["scale"] == 0.5 and len(cal["layers"]) == 5
    vec = Vector.load(out / "train" / "vector.safetensors")
    assert vec.card.method == "mean_diff"
    assert vec.card.recommended_layers == cal["layers"] and vec.card.recommended_scale == cal["scale"]
    task = doc["tasks"][0]
    costs = task["costs"]
    assert costs["lora_train_s"] > 0 and costs["finetune_train_s"] > 0
    for name in ("lora", "finetune"):  # the quick options cap training at 1 epoch: validation before and after it
        assert len(costs[f"{name}_curve"]["val_loss"]) == 2 and costs[f"{name}_curve"]["n_val"] == 2
    assert set(costs["training"]) == {"steering", "steering:preference", "lora", "finetune"}
    assert all(c["peak_rss_mib"] >= 0 for c in costs["training"].values())
    assert task["info"]["sweep_method"] == task["info"]["prompting_method"]
    deltas = {r["condition"] for r in rows if r["metric"] == "delta_p_match"}
    assert {"steering", "steering:preference", "steering+prompting"} <= deltas
    by_method = task["calibration_by_method"]
    assert by_method["mean_diff"] == {"condition": "steering", **task["calibration"]}
    assert by_method["preference"]["condition"] == "steering:preference" and by_method["preference"]["scale"] == 0.5
    trained = Vector.load(out / "train" / "vector_preference.safetensors")
    assert trained.card.method == "preference" and trained.card.recommended_scale == 0.5
    for name in (
        "report.md",
        "report.html",
        "train/metric_vs_scale.png",
        "train/conditions.png",
        "train/finetune_loss.png",
    ):
        assert (out / name).stat().st_size > 0
    assert "data:image/png;base64," in (out / "report.html").read_text()
    report = (out / "report.md").read_text()
    assert "| preference | steering:preference |" in report
    assert f"steering+prompting uses {task['info']['prompting_method']}" in report


def test_bench_cli_refuses_unknown_methods_before_loading_a_model(tmp_path):
    args = ["bench", "--out", str(tmp_path), "--suite", "seed", "--methods", "mean_diff,telepathy"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "unknown steering methods ['telepathy']" in str(result.exception)
    assert "preference" in str(result.exception)


def test_bench_cli_rejects_missing_inputs(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "say what to run" in str(result.exception)


def test_bench_cli_refuses_unknown_conditions_and_a_run_without_unsteered(tmp_path):
    base = ["bench", "--out", str(tmp_path), "--suite", "seed"]
    result = CliRunner().invoke(app, [*base, "--conditions", "unsteered,lora,telepathy"])
    assert result.exit_code != 0 and "unknown conditions ['telepathy']" in str(result.exception)
    assert "finetune" in str(result.exception)
    result = CliRunner().invoke(app, [*base, "--conditions", "steering,lora"])
    assert result.exit_code != 0 and "must include unsteered" in str(result.exception)
    result = CliRunner().invoke(app, [*base, "--train-epochs", "0"])
    assert result.exit_code != 0 and "--train-epochs 0" in str(result.exception)
