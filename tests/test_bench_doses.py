"""A bench run whose grids are relative doses: calibration and sweep scales come from the metered residual norms."""

from __future__ import annotations

import math

import torch
from tiny import tiny_model

from steerlab.evaluate.calibrate import scale_for_dose
from steerlab.evaluate.conditions import sweep_name
from steerlab.evaluate.data import ABItem
from steerlab.evaluate.runner import RunOptions, TaskSpec, run_task
from steerlab.evaluate.tasks import ABTask


def _ab(n: int, start: int) -> list[ABItem]:
    return [ABItem(f"Q{i}: agree?\n(A) yes\n(B) no", "(A)", "(B)") for i in range(start, start + n)]


def test_run_task_converts_dose_grids_per_window():
    torch.manual_seed(0)
    model = tiny_model("llama")
    spec = TaskSpec("agree", ABTask(), _ab(6, 0), _ab(3, 10), _ab(4, 20), 1)
    opts = RunOptions(
        n_windows=1,
        doses=(0.001, 0.01),
        sweep_doses=(0.005,),
        n_fluency=2,
        gen_tokens=4,
        latency_rounds=0,
        conditions=("unsteered", "steering"),
    )
    result = run_task(model, spec, opts)
    cal = result.calibration
    assert cal.grid_unit == "dose" and any(math.isclose(cal.dose, d) for d in opts.doses)
    assert result.vector.card.metadata["calibration"]["dose"] == cal.dose
    sweep = scale_for_dose(result.vector, cal.residual_norms, cal.layers, 0.005)
    conditions = {r["condition"] for r in result.rows}
    assert {sweep_name(sweep), sweep_name(-sweep)} <= conditions
