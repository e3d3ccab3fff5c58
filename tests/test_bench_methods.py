"""`steerlab bench --methods`: each steering method is its own condition, calibration and paired rows (tiny model)."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_model

from steerlab.errors import SteerlabError
from steerlab.evaluate.data import ABItem
from steerlab.evaluate.report import markdown, summarise
from steerlab.evaluate.runner import RunOptions, TaskSpec, check_methods, run_task
from steerlab.evaluate.tasks import ABTask
from steerlab.vector import Vector


def _ab(n: int, start: int) -> list[ABItem]:
    return [ABItem(f"Q{i}: agree?\n(A) yes\n(B) no", "(A)", "(B)") for i in range(start, start + n)]


def _opts(methods: tuple[str, ...]) -> RunOptions:
    return RunOptions(
        n_windows=1,
        scales=(0.5, 2.0),
        sweep=(0.5,),
        n_fluency=2,
        gen_tokens=4,
        latency_rounds=0,
        conditions=("unsteered", "steering", "prompting", "steering+prompting"),
        methods=methods,
        method_options={"preference": {"epochs": 1, "eval_every": 1}},
    )


def test_two_methods_write_their_own_conditions_calibrations_and_paired_rows(tmp_path):
    torch.manual_seed(0)
    spec = TaskSpec("agree", ABTask(), _ab(6, 0), _ab(3, 10), _ab(4, 20), 1, instruction="Agree.")
    result = run_task(tiny_model("llama"), spec, _opts(("mean_diff", "preference")), tmp_path / "agree")
    conditions = {r["condition"] for r in result.rows}
    assert {"unsteered", "steering", "steering:preference", "prompting", "steering+prompting"} <= conditions
    paired = {r["condition"] for r in result.rows if r["metric"] == "delta_p_match"}
    assert {"steering", "steering:preference", "steering+prompting"} <= paired
    assert [m.method for m in result.methods] == ["mean_diff", "preference"]
    doc = result.as_json()
    by_method = doc["calibration_by_method"]
    assert by_method["mean_diff"]["condition"] == "steering"
    assert by_method["preference"]["condition"] == "steering:preference"
    assert by_method["mean_diff"]["scale"] == doc["calibration"]["scale"]
    assert doc["info"]["prompting_method"] in ("mean_diff", "preference")
    assert set(doc["costs"]["by_method"]) == {"mean_diff", "preference"}
    trained = Vector.load(tmp_path / "agree" / "vector_preference.safetensors")
    assert trained.card.metadata["calibration"]["scale"] == by_method["preference"]["scale"]
    assert (
        Vector.load(tmp_path / "agree" / "vector.safetensors").card.metadata["calibration"]["scale"]
        == (doc["calibration"]["scale"])
    )
    task = {"name": "agree", **doc}
    summary = summarise(task)
    assert {"steering", "steering:preference"} <= set(summary["effects"]) & set(summary["significant"])
    text = markdown({"meta": _meta(), "tasks": [task], "summary": [summary]})
    assert "| preference | steering:preference |" in text and "| mean_diff | steering |" in text
    assert f"steering+prompting uses {doc['info']['prompting_method']}" in text


def test_single_method_keeps_the_legacy_shape():
    torch.manual_seed(0)
    spec = TaskSpec("agree", ABTask(), _ab(6, 0), _ab(3, 10), _ab(4, 20), 1)
    doc = run_task(tiny_model("llama"), spec, _opts(("mean_diff",))).as_json()
    assert "calibration_by_method" not in doc and "by_method" not in doc["costs"]
    assert not any(r["condition"].startswith("steering:") for r in doc["rows"])


def test_unknown_or_repeated_methods_are_refused_with_the_registry():
    with pytest.raises(SteerlabError, match=r"unknown steering methods \['nope'\].*mean_diff.*preference"):
        check_methods(["mean_diff", "nope"])
    with pytest.raises(SteerlabError, match="distinct"):
        check_methods(["mean_diff", "mean_diff"])


def _meta() -> dict[str, object]:
    return {"suite": "test", "model": "tiny", "run_seconds": 1.0, "threads": 1, "seed": 0}
