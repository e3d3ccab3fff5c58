"""The suite's calibrated axes measured as one kit (tiny model): run_task per axis, then the interference section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny import tiny_model

from steerlab.errors import SteerlabError
from steerlab.evaluate import suite_kit
from steerlab.evaluate.data import ABItem, MinimalPair
from steerlab.evaluate.lora import LoraConfig
from steerlab.evaluate.report import add_interference, write_all
from steerlab.evaluate.runner import RunOptions, TaskSpec, run_task
from steerlab.evaluate.tasks import ABTask, PairLogprobTask


def _ab(n: int, start: int) -> list[ABItem]:
    return [ABItem(f"Is {i} a large number?\n(A) yes\n(B) no", "(A)", "(B)") for i in range(start, start + n)]


def _minimal(n: int, start: int) -> list[MinimalPair]:
    return [MinimalPair("", f"Person {i} was kind.", f"Person {i} was rude.") for i in range(start, start + n)]


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def finished(model, tmp_path_factory):
    specs = [
        TaskSpec("agree", ABTask(), _ab(6, 0), _ab(3, 10), _ab(4, 20), 1, "Agree."),
        TaskSpec("kind", PairLogprobTask(), _minimal(6, 0), _minimal(3, 10), _minimal(4, 20), -1, "Be kind."),
    ]
    opts = RunOptions(
        n_windows=1,
        scales=(0.5, 2.0),
        sweep=(1.0,),
        n_fluency=2,
        gen_tokens=4,
        k_shots=1,
        latency_rounds=0,
        lora=LoraConfig(epochs=1, batch_size=4),
    )
    out = tmp_path_factory.mktemp("suite")
    results = [run_task(model, spec, opts, out / spec.name) for spec in specs]
    write_all(out, results, {"suite": "unit", "model": model.name, "seed": 0, "threads": 1, "run_seconds": 1.0})
    return specs, results, out


def test_run_task_rows_and_calibrated_card(finished) -> None:
    _, results, out = finished
    for result in results:
        conditions = {r["condition"] for r in result.rows}
        assert {"unsteered", "steering", "prompting", "fewshot", "lora", "steering@-1", "steering@1"} <= conditions
        card = result.vector.card
        assert card.recommended_scale == result.calibration.scale and abs(card.recommended_scale) in (0.5, 2.0)
        assert (out / result.name / "vector.safetensors").is_file()
    assert results[1].calibration.scale < 0  # goal -1 steers against the direction


def test_interference_section_of_the_calibrated_kit(model, finished) -> None:
    specs, results, out = finished
    vectors = suite_kit.saved_vectors(out)
    assert list(vectors) == ["agree", "kind"]
    kit = suite_kit.calibrated_kit(vectors)
    assert [e.scale for e in kit.entries] == [r.calibration.scale for r in results]
    report = suite_kit.measure_suite_kit(model, specs, vectors, n_items=3, gen_tokens=4)
    assert report.task_effects is not None and report.task_effects.n_items == [3, 3]
    section = suite_kit.write(report, out)
    doc = add_interference(out, section)
    saved = json.loads((out / "results.json").read_text())
    assert saved["interference"]["max_axes"] == report.max_axes and doc["interference"]["names"] == ["agree", "kind"]
    assert len(saved["rows"]) == sum(len(r.rows) for r in results)  # the axes' rows are kept
    md = (out / "report.md").read_text()
    assert "## Interference of the calibrated axes" in md and "| agree |" in md
    assert (out / "interference.png").stat().st_size > 1000
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_saved_vectors_need_a_finished_run(tmp_path: Path, model, finished) -> None:
    with pytest.raises(SteerlabError, match=r"no results\.json"):
        suite_kit.saved_vectors(tmp_path)
    specs, _, out = finished
    with pytest.raises(SteerlabError, match="no suite axis"):
        suite_kit.measure_suite_kit(model, specs[:1], suite_kit.saved_vectors(out), 2, 4)
