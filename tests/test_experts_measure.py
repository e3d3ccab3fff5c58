"""Calibration and interference with expert vectors (router-logit offsets) on a tiny random MoE: calibration grids
their scale on the task metric, doses are refused, and interference skips the residual-only diagnostics, saying so."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tiny import tiny_moe
from typer.testing import CliRunner

from steerlab import Condition, ExpertVector, Kit, KitEntry, SteerlabError, Vector
from steerlab.card import Card
from steerlab.cli.app import app
from steerlab.evaluate.axis_tasks import BenchAxisTask
from steerlab.evaluate.calibrate import DEFAULT_EXPERT_SCALES, calibrate, dose_per_scale, grid_for, write_to_card
from steerlab.evaluate.data import ABItem
from steerlab.evaluate.scoring import PLAIN, Setting
from steerlab.evaluate.tasks import ABTask
from steerlab.interference import cosine_matrix, measure_interference, orthogonalize_kit
from steerlab.pairs import PairSet

ITEMS = [
    ABItem(f"Is {i} even?\n(A) yes\n(B) no", "(A)" if i % 2 else "(B)", "(B)" if i % 2 else "(A)") for i in range(6)
]


@pytest.fixture(scope="module")
def model():
    return tiny_moe("qwen3_moe")


@pytest.fixture(scope="module")
def experts(model) -> ExpertVector:
    """Strong enough to force and forbid experts at every routed block: it must move the task metric."""
    routed = sorted(model.anatomy.routers)
    vector = ExpertVector.from_offsets(model, {la: {0: -3.0, 1: -2.0, 2: 3.0, 3: 2.0} for la in routed}, name="moe")
    vector.card.model_fingerprint, vector.card.n_layers = model.fingerprint, model.n_layers
    return vector


def _residual(model, seed: int, name: str) -> Vector:
    gen = torch.Generator().manual_seed(seed)
    card = Card(base_model=model.name, model_fingerprint=model.fingerprint, n_layers=model.n_layers, name=name)
    return Vector({la: torch.randn(model.hidden_size, generator=gen) * 4 for la in (1, 2)}, card)


def _pairs(seed: int) -> PairSet:
    words = ["good day", "bad day", "calm sea", "rough sea", "warm sun", "cold rain"]
    rows = [{"prompt": f"say {i}", "positive": words[(i + seed) % 6], "negative": words[(i + seed + 1) % 6]}
            for i in range(6)]  # fmt: skip
    return PairSet.from_records(rows, f"tiny-{seed}")


def _mean(values) -> float:
    real = [v for v in values if not math.isnan(v)]
    return sum(real) / len(real)


def test_calibrating_an_expert_vector_grids_its_scale_on_the_task(model, experts) -> None:
    scales = (0.5, 2.0)
    cal = calibrate(model, ABTask(), experts, ITEMS, 1, [[1, 2], [3]], scales=scales, n_fluency=2, gen_tokens=4,
                    budget=10.0)  # fmt: skip
    assert cal.site == "router" and cal.grid_unit == "scale" and cal.residual_norms == {}
    assert math.isnan(cal.dose) and all(math.isnan(p.dose) for p in cal.grid)
    assert {(tuple(p.layers), p.scale) for p in cal.grid} == {(w, s) for w in ((1, 2), (3,)) for s in scales}
    # each point's metric is the task run under exactly that expert entry, computed here without the calibration
    base = _mean(ABTask().evaluate(model, PLAIN, ITEMS)["p_match"])
    assert cal.base_metric == pytest.approx(base, abs=1e-9)
    for point in cal.grid:
        kit = Kit.single(experts, point.scale, point.layers)
        metric = _mean(ABTask().evaluate(model, Setting("x", steering=kit), ITEMS)["p_match"])
        assert point.metric == pytest.approx(metric, abs=1e-9)
    assert any(abs(p.effect) > 1e-6 for p in cal.grid), "the router offsets should move the metric"
    assert cal.within_budget and (cal.layers, abs(cal.scale)) in [(p.layers, p.scale) for p in cal.grid]
    card = write_to_card(experts, cal, "unit").card
    assert card.recommended_scale == cal.scale and card.metadata["calibration"]["site"] == "router"


def test_doses_are_refused_for_expert_vectors(model, experts) -> None:
    message = r"expert vector \(router-logit offsets\): a dose .* --scales 0.5,1,2,4"
    with pytest.raises(SteerlabError, match=message):
        calibrate(model, ABTask(), experts, ITEMS, 1, [[1]], doses=(0.1,), n_fluency=2, gen_tokens=4)
    with pytest.raises(SteerlabError, match=message):
        dose_per_scale(experts, {1: 1.0}, [1])
    assert grid_for(experts, None, None) == (DEFAULT_EXPERT_SCALES, None)
    assert grid_for(experts, (3.0,), None) == ((3.0,), None)
    with pytest.raises(SteerlabError, match=message):
        grid_for(experts, None, (0.5,))


def test_calibrate_cli_takes_expert_vectors_on_scales_and_refuses_doses(model, experts, tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    model.hf_model.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    experts.save(tmp_path / "moe.safetensors")
    records = [{"question": i.question, "answer_matching_behavior": i.matching,
                "answer_not_matching_behavior": i.not_matching} for i in ITEMS]  # fmt: skip
    (tmp_path / "val.json").write_text(json.dumps(records))
    args = ["calibrate", str(tmp_path / "moe.safetensors"), "--task", "ab", "--eval", str(tmp_path / "val.json"),
            "--model", str(folder), "--out", str(tmp_path / "c.safetensors"), "--window", "1-2", "--budget", "10",
            "--repetition-budget", "1"]  # fmt: skip
    # the default grid for an expert vector (DEFAULT_EXPERT_SCALES) is grid_for's, tested above; one scale here
    refused = CliRunner().invoke(app, [*args, "--doses", "0.1,0.2"])
    assert refused.exit_code != 0 and "a dose is a push against the residual stream" in str(refused.exception)
    result = CliRunner().invoke(app, [*args, "--scales", "2"])
    assert result.exit_code == 0, result.output
    assert "(router offsets)" in result.output
    back = Vector.load(tmp_path / "c.safetensors")
    assert isinstance(back, ExpertVector) and torch.equal(back.offsets[1], experts.offsets[1])
    assert back.card.recommended_scale == 2.0 and back.card.recommended_layers == [1, 2]
    assert back.card.metadata["calibration"]["site"] == "router"


def test_interference_skips_residual_diagnostics_for_expert_axes_and_says_so(model, experts) -> None:
    a, b = _residual(model, 1, "a"), _residual(model, 2, "b")
    kit = Kit([KitEntry(a, 1.0), KitEntry(experts, 1.5), KitEntry(b, 1.0)])
    report = measure_interference(model, kit, [_pairs(1), _pairs(2), _pairs(3)], names=["a", "moe", "b"],
                                  prompts=["hello", "the sea"], max_new_tokens=5, max_pairs=4)  # fmt: skip
    assert report.router_axes == ["moe"] and set(report.held_out) == {"a", "b"}
    assert len(report.notes) == 1 and "moe" in report.notes[0] and "not defined" in report.notes[0]
    assert "leaves them out" in report.notes[0]
    assert math.isnan(report.cosine[0][1]) and math.isnan(report.cosine[1][2]) and not math.isnan(report.cosine[0][2])
    assert not report.cosine_by_layer["a|moe"] and report.cosine_by_layer["a|b"]
    assert all(math.isnan(row[1]) for row in report.cross_effect)  # nothing reads an expert axis's projection
    assert all(not math.isnan(report.cross_effect[1][j]) for j in (0, 2))  # what it does to the others is measured
    assert any(report.cross_effect[1][j] != 0.0 for j in (0, 2)), "the expert axis should move the residual axes"
    assert "moe" not in report.effective
    data = report.to_dict()
    assert data["router_axes"] == ["moe"] and data["cross_effect"][0][1] is None


def test_interference_judges_expert_axes_on_their_task(model, experts, capsys, monkeypatch) -> None:
    from steerlab.cli import kits

    kit = Kit([KitEntry(_residual(model, 1, "a"), 1.0), KitEntry(experts, 1.5)])
    tasks = {name: BenchAxisTask(ABTask(), ITEMS) for name in ("a", "moe")}
    report = measure_interference(model, kit, [_pairs(1), _pairs(2)], names=["a", "moe"], prompts=["hello"],
                                  max_new_tokens=4, max_pairs=4, tasks=tasks)  # fmt: skip
    assert report.task_effects is not None
    plain = _mean(ABTask().evaluate(model, PLAIN, ITEMS)["p_match"])
    steered = _mean(ABTask().evaluate(model, Setting("x", steering=Kit([KitEntry(experts, 1.5)])), ITEMS)["p_match"])
    assert report.task_effects.effect[1][1] == pytest.approx(steered - plain, abs=1e-9)
    assert "judged on their task metric" in report.notes[0]
    # COLUMNS, not console.width: undoing a width setattr would pin the shared console at its old width (80).
    monkeypatch.setenv("COLUMNS", "300")
    kits.print_report(report)
    printed = capsys.readouterr().out
    assert "- (router offsets)" in printed and "note: axes moe are expert entries" in printed


def test_gram_schmidt_leaves_expert_entries_and_keeps_conditions(model, experts) -> None:
    gate = Condition(torch.ones(model.hidden_size) / model.hidden_size**0.5, 1, 0.0)
    a, b = _residual(model, 1, "a"), _residual(model, 2, "b")
    kit = Kit([KitEntry(a, 1.0), KitEntry(experts, 2.0, when=gate), KitEntry(b, 1.0, when=gate)]).when(gate)
    ortho = orthogonalize_kit(kit)
    assert ortho.entries[1] is kit.entries[1] and ortho.condition is gate
    assert ortho.entries[2].when is gate and abs(cosine_matrix(ortho)[0][2]) < 1e-5
    assert math.isnan(cosine_matrix(kit)[0][1])
