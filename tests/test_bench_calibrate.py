"""Calibration on a tiny model: the choice lies inside the grid and respects the fluency budget; LoRA trains."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from tiny import tiny_model

from steerlab.errors import SteerlabError
from steerlab.evaluate.calibrate import (
    Calibration,
    GridPoint,
    _choose,
    _fits,
    calibrate,
    dose_per_scale,
    layer_windows,
    paired_se,
    scale_for_dose,
    write_to_card,
)
from steerlab.evaluate.data import ABItem
from steerlab.evaluate.lora import LoraConfig, train_lora
from steerlab.evaluate.scoring import PLAIN, Setting
from steerlab.evaluate.tasks import ABTask
from steerlab.vector import Vector

ITEMS = [
    ABItem(f"Is {i} even?\n(A) yes\n(B) no", "(A)" if i % 2 else "(B)", "(B)" if i % 2 else "(A)") for i in range(6)
]


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def vector(model):
    torch.manual_seed(1)
    return Vector({layer: torch.randn(model.hidden_size) * 3 for layer in range(model.n_layers)})


def test_layer_windows_default_model_shape():
    assert layer_windows(30, 2) == [[10, 11, 12, 13, 14], [15, 16, 17, 18, 19]]
    assert layer_windows(30, 4) == [list(range(s, s + 5)) for s in (5, 10, 15, 20)]
    assert all(0 <= la < 4 for w in layer_windows(4, 3) for la in w)


def test_calibration_picks_inside_the_grid_within_budget(model, vector):
    windows, scales = [[1], [2]], (0.5, 1.0, 4.0)
    cal = calibrate(model, ABTask(), vector, ITEMS, goal=1, windows=windows, scales=scales, n_fluency=2, gen_tokens=4)
    assert cal.layers in windows and abs(cal.scale) in scales
    chosen = next(p for p in cal.grid if p.layers == cal.layers and p.scale == cal.scale)
    if cal.within_budget:
        assert chosen.fluency >= cal.fluency_floor
        assert chosen.effect == max(p.effect for p in cal.grid if p.within_budget)
    assert cal.fluency_margin == 1.0 and any(p.fluency_se > 0 for p in cal.grid)
    for point in cal.grid:
        fluent = point.fluency - point.fluency_se >= cal.base_fluency - 0.1 * abs(cal.base_fluency)
        assert point.within_budget == (fluent and point.repetition <= cal.base_repetition + 0.1)


def test_repetition_budget_rejects_loops_that_score_fluent():
    cal = Calibration([], 0.0, "p_match", 1, 0.1, 0.5, -1.0, -1.1, False, repetition_budget=0.1, base_repetition=0.05)
    assert _fits(cal, fluency=-1.05, repetition=0.15)
    assert not _fits(cal, fluency=-0.2, repetition=0.4)  # a loop: very predictable, so a high log-prob
    assert not _fits(cal, fluency=-1.2, repetition=0.0)
    assert not _fits(cal, fluency=math.nan, repetition=0.0)


def test_the_fluency_check_keeps_a_margin_of_paired_standard_errors():
    steered, base = [-1.0, -0.8, math.nan, -1.3, -0.9], [-0.9, -0.8, -1.0, -1.0, -0.7]
    diffs = np.array([-0.1, 0.0, -0.3, -0.2])  # the prompt with a NaN is left out
    assert paired_se(steered, base) == pytest.approx(diffs.std(ddof=1) / 2)
    assert paired_se([-1.0], [-0.5]) == 0.0 and paired_se([math.nan, -1.0], [-1.0, math.nan]) == 0.0
    cal = Calibration([], 0.0, "p_match", 1, 0.1, 0.5, -1.0, -1.1, False, fluency_margin=1.0)
    assert _fits(cal, fluency=-1.05, repetition=0.0, se=0.04)
    assert not _fits(cal, fluency=-1.05, repetition=0.0, se=0.06)  # passes on the mean, not with the margin
    assert not _fits(cal, fluency=-1.05, repetition=0.0, se=math.nan)
    cal.fluency_margin = 0.0
    assert _fits(cal, fluency=-1.05, repetition=0.0, se=0.06)


def test_negative_goal_gives_negative_scale_and_card_records_it(model, vector, tmp_path):
    cal = calibrate(model, ABTask(), vector, ITEMS, goal=-1, windows=[[1, 2]], scales=(0.5,), n_fluency=2, gen_tokens=4)
    assert cal.scale == -0.5
    write_to_card(vector, cal, "unit")
    assert vector.card.recommended_layers == [1, 2] and vector.card.recommended_scale == -0.5
    loaded = Vector.load(vector.save(tmp_path / "v.safetensors"))
    assert loaded.card.recommended_scale == -0.5 and loaded.card.metadata["calibration"]["task"] == "unit"


def test_impossible_budget_is_flagged_and_takes_the_gentlest(model, vector):
    # A negative budget puts the floor above the unsteered fluency: only a no-op could pass.
    cal = calibrate(model, ABTask(), vector, ITEMS, 1, [[1]], (0.5, 8.0), budget=-0.5, n_fluency=2, gen_tokens=4)
    assert not cal.within_budget and cal.scale == 0.5
    assert len(cal.grid) == 1  # stops at the first scale that breaks the budget


def test_calibration_rejects_bad_input(model, vector):
    with pytest.raises(SteerlabError, match="goal"):
        calibrate(model, ABTask(), vector, ITEMS, goal=0)
    with pytest.raises(SteerlabError, match="validation"):
        calibrate(model, ABTask(), vector, [], goal=1)
    with pytest.raises(SteerlabError, match="repetition budget"):
        calibrate(model, ABTask(), vector, ITEMS, goal=1, repetition_budget=1.5)
    with pytest.raises(SteerlabError, match="no direction"):
        calibrate(model, ABTask(), vector.select([1]), ITEMS, 1, windows=[[3]])


def test_lora_moves_the_metric_toward_the_goal(model):
    task = ABTask()
    train = [ABItem(f"Q{i}?\n(A) a\n(B) b", "(A)", "(B)") for i in range(8)]
    before = sum(task.evaluate(model, PLAIN, train)["p_match"])
    result = train_lora(model, task.sft_examples(train, 1), LoraConfig(epochs=4, lr=5e-3, batch_size=4))
    after = sum(task.evaluate(model, Setting("lora", model=result.model), train)["p_match"])
    assert after > before and result.train_seconds > 0 and result.losses[-1] < result.losses[0]
    assert sum(task.evaluate(model, PLAIN, train)["p_match"]) == pytest.approx(before)  # base model untouched


def _cli_setup(model, vector, tmp_path) -> list[str]:
    """A saved tiny model, vector and validation file; the calibrate arguments that use them."""
    import json

    folder = tmp_path / "tiny"
    model.hf_model.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    vector.save(tmp_path / "v.safetensors")
    records = [
        {"question": i.question, "answer_matching_behavior": i.matching, "answer_not_matching_behavior": i.not_matching}
        for i in ITEMS
    ]
    (tmp_path / "val.json").write_text(json.dumps(records))
    args = ["calibrate", str(tmp_path / "v.safetensors"), "--task", "ab", "--eval", str(tmp_path / "val.json")]
    return [*args, "--model", str(folder), "--out", str(tmp_path / "c.st")]


def _invoke(args: list[str]) -> Any:
    from typer.testing import CliRunner

    from steerlab.cli.app import app

    return CliRunner().invoke(app, args)


def test_calibrate_cli_writes_the_choice_into_the_card(model, vector, tmp_path):
    args = [*_cli_setup(model, vector, tmp_path), "--window", "1-2", "--window", "3", "--doses", "0.001,0.01"]
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    card = Vector.load(tmp_path / "c.st").card
    calibration = card.metadata["calibration"]
    assert card.recommended_layers in ([1, 2], [3]) and calibration["grid_unit"] == "dose"
    assert any(math.isclose(calibration["dose"], d) for d in (0.001, 0.01))
    norms = {int(k): h for k, h in calibration["residual_norms"].items()}
    per_scale = sum(float(vector.directions[la].norm()) / norms[la] for la in card.recommended_layers)
    assert math.isclose(abs(card.recommended_scale) * per_scale, calibration["dose"], rel_tol=1e-6)
    assert calibration["out_of_budget"] is False
    assert card.metadata["calibration"]["n_val"] == len(ITEMS)


def test_calibrate_cli_refuses_when_nothing_fits_unless_forced(model, vector, tmp_path):
    # A negative budget puts the floor above the unsteered fluency: no candidate can fit.
    args = [*_cli_setup(model, vector, tmp_path), "--window", "1", "--scales", "0.5,8", "--budget", "-0.5"]
    result = _invoke(args)
    assert result.exit_code == 1 and "no candidate fits the fluency budget" in result.output
    assert not (tmp_path / "c.st").exists()
    forced = _invoke([*args, "--force"])
    assert forced.exit_code == 0, forced.output
    card = Vector.load(tmp_path / "c.st").card
    assert card.recommended_scale == 0.5  # the gentlest candidate
    assert card.metadata["calibration"]["out_of_budget"] is True
    assert card.metadata["calibration"]["within_budget"] is False


def _known(within: bool = False) -> Calibration:
    return Calibration([], 0.0, "p_match", 1, 0.1, 0.5, -1.0, -1.1, within, repetition_budget=0.1, base_repetition=0.05)


def test_nan_measurements_fail_the_budget():
    cal = _known()
    assert not _fits(cal, fluency=-1.0, repetition=math.nan)  # an unmeasured repetition rate must not pass
    assert not _fits(cal, fluency=math.nan, repetition=math.nan)
    broken_base = _known()
    broken_base.fluency_floor = math.nan  # the unsteered log-prob itself was NaN
    assert not _fits(broken_base, fluency=-1.0, repetition=0.0)
    broken_base.fluency_floor, broken_base.base_repetition = -1.1, math.nan
    assert not _fits(broken_base, fluency=-1.0, repetition=0.0)


def test_nan_effect_never_wins_the_selection():
    cal = _known()
    cal.grid = [
        GridPoint([1], 0.5, math.nan, math.nan, -1.0, True, 0.0),
        GridPoint([1], 1.0, 0.6, 0.1, -1.05, True, 0.0),
        GridPoint([2], 0.25, 0.9, 0.4, -1.0, False, 0.0),  # the largest effect, but outside the budget
    ]
    _choose(cal)
    assert cal.within_budget and (cal.layers, cal.scale) == ([1], 1.0)
    only_nan = _known()
    only_nan.grid = [GridPoint([1], 0.5, math.nan, math.nan, -1.0, True, 0.0)]
    _choose(only_nan)
    assert not only_nan.within_budget  # nothing with a real effect fits: flagged, not passed off as in budget


def test_dose_per_scale_on_known_norms():
    vector = Vector({0: torch.tensor([3.0, 4.0]), 1: torch.tensor([0.0, 2.0])})  # norms 5 and 2
    norms = {0: 10.0, 1: 4.0}
    assert dose_per_scale(vector, norms, [0, 1]) == pytest.approx(0.5 + 0.5)
    assert scale_for_dose(vector, {"0": 10.0, "1": 4.0}, [0, 1], 0.7) == pytest.approx(0.7)
    assert scale_for_dose(vector, norms, [0], 0.7) == pytest.approx(1.4)
    with pytest.raises(SteerlabError, match="dose at block 1"):
        dose_per_scale(vector, {0: 10.0, 1: 0.0}, [0, 1])
    with pytest.raises(SteerlabError, match="dose at block 1"):
        dose_per_scale(Vector({1: torch.zeros(2)}), norms, [1])


def test_dose_grid_is_converted_per_window_and_recorded(model, vector):
    doses = (0.002, 0.02)
    cal = calibrate(model, ABTask(), vector, ITEMS, 1, [[1], [2, 3]], doses=doses, n_fluency=2, gen_tokens=4)
    assert cal.grid_unit == "dose" and set(cal.residual_norms) == {"1", "2", "3"}
    assert all(h > 0 for h in cal.residual_norms.values())
    for point in cal.grid:
        assert any(math.isclose(point.dose, d) for d in doses)
        assert math.isclose(point.scale, scale_for_dose(vector, cal.residual_norms, point.layers, point.dose))
    first = {p.layers[0]: p.scale for p in cal.grid if math.isclose(p.dose, doses[0])}
    assert first[1] != first[2]  # the same dose is a different scale on each window
    chosen = next(p for p in cal.grid if p.layers == cal.layers and p.scale == cal.scale)
    assert cal.dose == chosen.dose
    assert write_to_card(vector, cal, "unit").card.metadata["calibration"]["dose"] == cal.dose


def test_scale_grids_still_record_their_dose(model, vector):
    cal = calibrate(model, ABTask(), vector, ITEMS, 1, [[1]], scales=(0.001,), n_fluency=2, gen_tokens=4)
    assert cal.grid_unit == "scale" and cal.scale == 0.001
    assert math.isclose(cal.dose, 0.001 * dose_per_scale(vector, {1: cal.residual_norms["1"]}, [1]))


def test_suite_grids_are_doses_around_the_safe_dose():
    from steerlab.evaluate.suite import options

    for quick in (True, False):
        opts = options(quick)
        assert opts.doses is not None and 0.7 in opts.doses and max(opts.doses) < 1.9
        assert opts.sweep_doses


def test_scales_and_doses_together_are_refused():
    from steerlab.cli.bench import _grid

    with pytest.raises(SteerlabError, match="not both"):
        _grid("0.5", "0.5")
    assert _grid(None, "0.1,0.7") == (None, (0.1, 0.7)) and _grid("1", None) == ((1.0,), None)


def test_calibration_on_generated_tokens_is_recorded_in_the_card(model, vector, tmp_path):
    cal = calibrate(
        model, ABTask(), vector, ITEMS, 1, [[1]], doses=(0.02,), n_fluency=2, gen_tokens=4, positions="generated"
    )
    assert cal.positions == "generated"
    calibrated = write_to_card(Vector(dict(vector.directions)), cal, "u")
    assert calibrated.card.recommended_positions == "generated"
    assert calibrated.card.metadata["calibration"]["positions"] == "generated"
    with pytest.raises(SteerlabError, match="unknown positions"):
        calibrate(model, ABTask(), vector, ITEMS, 1, [[1]], doses=(0.02,), positions="middle")  # type: ignore[arg-type]


def test_bench_and_calibrate_refuse_unknown_positions_before_loading_a_model(model, vector, tmp_path):
    out = tmp_path / "bench"
    result = _invoke(["bench", "--suite", "caa", "--positions", "middle", "--model", "/nonexistent", "--out", str(out)])
    assert isinstance(result.exception, SteerlabError) and "unknown positions 'middle'" in str(result.exception)
    assert not out.exists()
    result = _invoke([*_cli_setup(model, vector, tmp_path), "--positions", "middle"])
    assert isinstance(result.exception, SteerlabError) and "unknown positions 'middle'" in str(result.exception)
    assert not (tmp_path / "c.st").exists()
