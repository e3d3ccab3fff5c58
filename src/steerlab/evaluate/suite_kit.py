"""The suite's calibrated vectors as one kit: how the axes interfere at the layers and scales the bench chose.

Every axis's vector enters at its calibrated layers and scale (from its card). The activation-projection measure reads
held-out pairs the vector was not extracted from (each spec's `held` items, else its validation items); the task
measure scores each axis's own test items, so the cross-effects are in the units of the table above them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.evaluate.axis_tasks import BenchAxisTask
from steerlab.evaluate.runner import TaskSpec
from steerlab.interference import InterferenceReport, measure_interference
from steerlab.kit import Kit, KitCard, KitEntry
from steerlab.models import LoadedModel
from steerlab.vector import Vector


def calibrated_kit(vectors: dict[str, Vector]) -> Kit:
    """One entry per axis at the layers and scale its card records (the bench's calibration writes them there)."""
    entries = [KitEntry.from_card(v) for v in vectors.values()]
    card = KitCard(name="seed-suite", description="every bench axis at its calibrated layers and scale")
    return Kit(entries, card)


def measure_suite_kit(
    base: LoadedModel, specs: list[TaskSpec], vectors: dict[str, Vector], n_items: int, gen_tokens: int
) -> InterferenceReport:
    by_name = {s.name: s for s in specs}
    missing = sorted(set(vectors) - set(by_name))
    if missing:
        raise SteerlabError(f"no suite axis named {missing}; the suite has {', '.join(by_name)}.")
    names = list(vectors)
    pairs = {n: by_name[n].task.extraction_pairs(list(by_name[n].held or by_name[n].val)) for n in names}
    tasks = {
        n: BenchAxisTask(by_name[n].task, list(by_name[n].test)[:n_items], by_name[n].source, by_name[n].goal)
        for n in names
    }
    return measure_interference(
        base,
        calibrated_kit(vectors),
        pairs,
        names=names,
        prompts_per_axis=2,
        max_new_tokens=gen_tokens,
        max_subsets=16,
        tasks=tasks,
    )


def saved_vectors(out_dir: Path) -> dict[str, Vector]:
    """The calibrated vectors a finished suite run left in out_dir/<axis>/vector.safetensors, in the run's order."""
    doc = out_dir / "results.json"
    if not doc.is_file():
        raise SteerlabError(
            f"{out_dir} holds no results.json: run `steerlab bench --suite seed --out {out_dir}` first."
        )
    names = [t["name"] for t in json.loads(doc.read_text())["tasks"]]
    return {n: Vector.load(out_dir / n / "vector.safetensors") for n in names}


def write(report: InterferenceReport, out_dir: Path) -> dict[str, Any]:
    """interference.json and interference.png under out_dir; returns what the suite report shows."""
    report.save_json(out_dir / "interference.json")
    report.save_png(out_dir / "interference.png")
    return {"json": "interference.json", "png": "interference.png", **summary(report)}


def summary(report: InterferenceReport) -> dict[str, Any]:
    effects = report.task_effects
    return {
        "names": report.names,
        "scales": report.scales,
        "max_axes": report.max_axes,
        "max_axes_set": report.max_axes_set,
        "effective": report.effective,
        "fluency_unsteered": report.fluency_unsteered,
        "fluency_solo": report.fluency_solo,
        "fluency_floor": report.settings["fluency_floor"],
        "keep_fraction": report.settings["keep_fraction"],
        "fluency_tolerance": report.settings["fluency_tolerance"],
        "judged_by": report.settings.get("judged_by", "activation projection"),
        "task_metrics": effects.metrics if effects else [],
        "task_effect": effects.effect if effects else [],
        "task_ci": effects.ci if effects else [],
        "n_items": effects.n_items if effects else [],
    }


def markdown(section: dict[str, Any]) -> list[str]:
    names, metrics = section["names"], section["task_metrics"]
    lines = [
        "",
        "## Interference of the calibrated axes",
        "",
        "Each axis's vector at its calibrated layers and scale. Cell = how much steering the ROW axis alone moves the "
        "COLUMN axis's task metric (its own test items), with a paired bootstrap 95% CI; the diagonal is each axis's "
        "own effect. Full report (cosines, activation-projection cross-effects, combinations tried): "
        f"`{section['json']}`.",
        "",
        "| steered \\ measured | " + " | ".join(f"{n} ({m})" for n, m in zip(names, metrics, strict=True)) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for name, row, cis in zip(names, section["task_effect"], section["task_ci"], strict=True):
        cells = [f"{_signed(v)} [{_signed(lo)}, {_signed(hi)}]" for v, (lo, hi) in zip(row, cis, strict=True)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    chosen = ", ".join(section["max_axes_set"]) or "none"
    return [*lines, "", _max_axes_sentence(section, chosen), "", f"![interference]({section['png']})"]


def _max_axes_sentence(section: dict[str, Any], chosen: str) -> str:
    """The criteria as the run applied them (its settings), not as the code's defaults say they would be."""
    keep = section.get("keep_fraction", 0.8)
    tolerance = section.get("fluency_tolerance", 0.1)
    judged = section.get("judged_by", "activation projection")
    test = "its paired 95% CI still excludes 0 and " if judged.startswith("task") else ""
    return (
        f"Max axes, judged on the {judged} (an axis counts when {test}it keeps >= {keep:.0%} of its solo effect; "
        f"fluency within {tolerance:.0%} of unsteered): **{section['max_axes']}** ({chosen}); axes with a measurable "
        f"solo effect: {', '.join(section['effective']) or 'none'}."
    )


def _signed(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.3f}"
