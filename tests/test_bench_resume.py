"""`steerlab bench --resume`: a stopped suite keeps its finished axes and runs only the missing ones (tiny model)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from tiny import tiny_model

from steerlab.errors import SteerlabError
from steerlab.evaluate.data import ABItem
from steerlab.evaluate.runner import RunOptions, TaskSpec
from steerlab.evaluate.suite_run import plan_resume, run_axes, run_settings
from steerlab.evaluate.tasks import ABTask


def _ab(n: int, start: int) -> list[ABItem]:
    return [ABItem(f"Q{i}: agree?\n(A) yes\n(B) no", "(A)", "(B)") for i in range(start, start + n)]


def _spec(name: str, offset: int) -> TaskSpec:
    return TaskSpec(name, ABTask(), _ab(6, offset), _ab(3, offset + 10), _ab(4, offset + 20), 1, instruction="Agree.")


OPTS = RunOptions(
    n_windows=1,
    scales=(0.5, 2.0),
    sweep=(0.5,),
    n_fluency=2,
    gen_tokens=4,
    latency_rounds=0,
    conditions=("unsteered", "steering", "prompting"),
)


def _meta(opts: RunOptions) -> dict:
    settings = run_settings(opts, model="tiny", suite="tiny", quick=True)
    return {"suite": "tiny", "quick": True, "model": "tiny", "seed": 0, "threads": 1, "settings": settings}


def test_a_resumed_run_keeps_the_finished_axis_untouched_and_runs_the_missing_one(tmp_path):
    model = tiny_model("llama")
    specs = [_spec("first", 0), _spec("second", 100)]
    torch.manual_seed(0)
    stopped, _ = run_axes(model, specs[:1], OPTS, tmp_path, _meta(OPTS))  # as if stopped after the first axis
    assert stopped["meta"]["complete"] is True and [t["name"] for t in stopped["tasks"]] == ["first"]
    files = [tmp_path / "first" / "results.json", tmp_path / "first" / "vector.safetensors"]
    stamps = [f.stat().st_mtime_ns for f in files]

    plan = plan_resume(tmp_path, specs, _meta(OPTS)["settings"])
    assert [t["name"] for t in plan.kept] == ["first"] and [s.name for s in plan.todo] == ["second"]

    doc, vectors = run_axes(model, specs, OPTS, tmp_path, _meta(OPTS), resume=True)
    assert [t["name"] for t in doc["tasks"]] == ["first", "second"]
    assert doc["tasks"][0]["rows"] == stopped["tasks"][0]["rows"]
    assert [f.stat().st_mtime_ns for f in files] == stamps  # the kept axis was not measured again
    assert doc["meta"]["resumed_axes"] == ["first"] and doc["meta"]["complete"] is True
    assert doc["meta"]["run_seconds"] > stopped["meta"]["run_seconds"]
    assert list(vectors) == ["first", "second"]
    assert {r["condition"] for r in doc["rows"] if r["task"] == "second"} >= {"unsteered", "steering"}
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert [s["name"] for s in on_disk["summary"]] == ["first", "second"]
    assert "second" in (tmp_path / "report.md").read_text()


def test_without_resume_every_axis_is_run_again(tmp_path):
    model = tiny_model("llama")
    specs = [_spec("first", 0)]
    run_axes(model, specs, OPTS, tmp_path, _meta(OPTS))
    stamp = (tmp_path / "first" / "results.json").stat().st_mtime_ns
    doc, _ = run_axes(model, specs, OPTS, tmp_path, _meta(OPTS))
    assert doc["meta"]["resumed_axes"] == []
    assert (tmp_path / "first" / "results.json").stat().st_mtime_ns != stamp


def test_resume_refuses_a_folder_measured_with_other_settings(tmp_path):
    model = tiny_model("llama")
    specs = [_spec("first", 0)]
    run_axes(model, specs, OPTS, tmp_path, _meta(OPTS))
    other = replace(OPTS, budget=0.5)
    with pytest.raises(SteerlabError, match="other settings \\(budget\\)"):
        plan_resume(tmp_path, specs, _meta(other)["settings"])
    assert plan_resume(tmp_path, specs, _meta(OPTS)["settings"]).todo == []


def test_resume_runs_an_axis_again_when_its_split_sizes_changed(tmp_path):
    model = tiny_model("llama")
    run_axes(model, [_spec("first", 0)], OPTS, tmp_path, _meta(OPTS))
    grown = replace(_spec("first", 0), test=_ab(5, 20))
    plan = plan_resume(tmp_path, [grown], _meta(OPTS)["settings"])
    assert plan.kept == [] and [s.name for s in plan.todo] == ["first"]


def test_resume_refuses_a_run_that_recorded_no_settings(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"meta": {"suite": "seed"}, "tasks": []}))
    with pytest.raises(SteerlabError, match="did not record its settings"):
        plan_resume(tmp_path, [_spec("first", 0)], _meta(OPTS)["settings"])


def test_the_settings_record_a_trainers_full_config_so_a_changed_default_is_noticed(tmp_path):
    from steerlab.preference import PreferenceConfig

    opts = replace(OPTS, methods=("mean_diff", "preference"), method_options={"preference": {"epochs": 2}})
    recorded = run_settings(opts, model="tiny")["method_settings"]
    assert recorded["mean_diff"] == {}
    assert recorded["preference"]["epochs"] == 2
    assert recorded["preference"]["fluency_weight"] == PreferenceConfig().fluency_weight  # a default, not given
    # An earlier run made under another default of the trainer is refused, naming the key.
    earlier = run_settings(opts)
    earlier["method_settings"]["preference"]["lr"] = 0.005
    (tmp_path / "results.json").write_text(json.dumps({"meta": {"settings": earlier}, "tasks": []}))
    with pytest.raises(SteerlabError, match="other settings \\(method_settings\\)"):
        plan_resume(tmp_path, [_spec("first", 0)], run_settings(opts))


def test_an_unknown_trainer_option_is_refused_when_the_settings_are_recorded():
    opts = replace(OPTS, methods=("preference",), method_options={"preference": {"epochz": 2}})
    with pytest.raises(SteerlabError, match=r"unknown option for method 'preference'.*epochs"):
        run_settings(opts)
