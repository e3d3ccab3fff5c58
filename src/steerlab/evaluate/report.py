"""Results on disk: results.json (every number), report.md (the seed-shaped table), PNG plots, one HTML page."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steerlab.evaluate import plots
from steerlab.evaluate.conditions import CONDITIONS, FINETUNES
from steerlab.evaluate.resultsdoc import method_calibrations, order_conditions, primary, steering_conditions
from steerlab.evaluate.runner import TaskResult
from steerlab.evaluate.share import LABELS, finetune_share

SHARED = ("prompting", "fewshot", "steering+prompting")  # after the steering methods, in the % of fine-tuning table
OUT_MARK = "†"  # numbers that use a scale from a calibration where no candidate fitted the fluency budget
OUT_LEGEND = (
    f"'{OUT_MARK}': uses a steering scale from an OUTSIDE-budget calibration (no candidate kept fluency within budget; "
    "the gentlest was used), so the number is not a within-budget result."
)


TEST_MARK = "‡"  # calibrated within budget, but the condition's own test generations broke that budget
TEST_LEGEND = (
    f"'{TEST_MARK}': calibrated within the fluency budget on the validation items, but its test generations broke the "
    "same budget (mean log-prob or 3-gram repetition) against its unsteered counterpart's test generations "
    "(unsteered's; for steering+prompting, prompting's), so the number is not a within-budget result either."
)


def in_budget(task: dict[str, Any]) -> bool:
    return bool(task.get("calibration", {}).get("within_budget", True))


def _uses_calibration(condition: str) -> bool:
    """Conditions run at the calibrated scale (sweep rows use their own fixed scales)."""
    return condition in ("steering", "steering+prompting") or condition.startswith("steering:")


def _out_of_budget(task: dict[str, Any], condition: str) -> bool:
    """Whether the condition uses a scale from an outside-budget calibration: its own method's, and for
    steering+prompting the method it was run with."""
    if not _uses_calibration(condition):
        return False
    cal = _calibration_of(task, condition) or task["calibration"]
    return not cal.get("within_budget", True)


def _calibration_of(task: dict[str, Any], condition: str) -> dict[str, Any] | None:
    """The calibration a steering condition ran at: its method's, and for steering+prompting the method it used."""
    cals = method_calibrations(task)
    if condition == "steering+prompting":
        return cals.get(task["info"].get("prompting_method", ""))
    return next((c for c in cals.values() if c["condition"] == condition), None)


def budget_broken_on_test(task: dict[str, Any], condition: str) -> bool:
    """Whether a calibrated steering condition's test generations break the budget its calibration used, measured
    against its unsteered counterpart's test generations (unsteered's; for steering+prompting, prompting's) as
    calibration measured against unsteered's validation ones. A NaN fails, as in calibration; runs without test
    fluency rows cannot tell (False)."""
    if not _uses_calibration(condition):
        return False
    cal = _calibration_of(task, condition)
    counterpart = "prompting" if condition == "steering+prompting" else "unsteered"
    mine, base = primary(task, condition, "fluency_logprob"), primary(task, counterpart, "fluency_logprob")
    if cal is None or mine is None or base is None:
        return False
    value, floor = _num(mine["value"]), _num(base["value"]) - cal["budget"] * abs(_num(base["value"]))
    rep, base_rep = primary(task, condition, "repetition"), primary(task, counterpart, "repetition")
    repetition_ok = True
    if rep is not None and base_rep is not None:
        repetition_ok = _num(rep["value"]) <= _num(base_rep["value"]) + cal.get("repetition_budget", 0.1)
    return not (value >= floor and repetition_ok)


def _margin(cal: dict[str, Any]) -> str:
    margin = cal.get("fluency_margin", 0.0)
    if not margin:
        return ""
    return f"; the log-prob check kept a margin of {margin:g} standard error(s) of the paired per-prompt difference"


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def _mark(task: dict[str, Any], condition: str) -> str:
    """The budget mark of a condition's numbers: outside-budget calibration, or test generations over budget."""
    if _out_of_budget(task, condition):
        return OUT_MARK
    return TEST_MARK if budget_broken_on_test(task, condition) else ""


def _moved(task: dict[str, Any], condition: str, base: dict[str, Any] | None) -> bool | None:
    """Whether the condition moved the primary metric: its paired-difference CI excludes 0 (runs before paired rows
    existed: its own CI excludes the unsteered mean). None when it was not run."""
    paired = primary(task, condition, f"delta_{task['info']['metric']}")
    if paired is not None:
        lo, hi = paired["ci"]
        return lo is not None and not lo <= 0.0 <= hi
    own = primary(task, condition)
    if own is None or base is None or own["ci"][0] is None:
        return None
    return not own["ci"][0] <= base["value"] <= own["ci"][1]


def summarise(task: dict[str, Any]) -> dict[str, Any]:
    """Goal-signed effects vs unsteered, % of the stronger fine-tune's effect, fluency, latency and training costs."""
    goal = task["info"]["goal"]
    base = primary(task, "unsteered")
    present = {r["condition"] for r in task["rows"]} | set(CONDITIONS)
    compared = [c for c in order_conditions(present) if c != "unsteered"]
    effects = {c: e for c in compared if (e := _effect(task, c, base, goal)) is not None}
    moved = {c: _moved(task, c, base) for c in compared}
    share = finetune_share(effects, moved)
    fluency = {
        c: (r or {}).get("value", math.nan)
        for c in ("unsteered", *compared)
        for r in [primary(task, c, "fluency_logprob")]
    }
    costs = task["costs"]
    return {
        "name": task["name"],
        "within_budget": in_budget(task),
        "metric": task["info"]["metric"],
        "goal": goal,
        "n_test": task["info"]["n_test"],
        "values": {c: r["value"] for c in ("unsteered", *compared) for r in [primary(task, c)] if r is not None},
        "effects": effects,
        "pct_of_finetune": share["pct"],
        "finetune_baseline": share["baseline"],
        "finetune_effect": share["baseline_effect"],
        "pct_note": share["note"],
        "lora_effect_significant": bool(moved.get("lora")),
        "significant": moved,
        "fluency": fluency,
        "latency_overhead_pct": costs.get("latency", {}).get("overhead_pct", math.nan),
        "latency_method": costs.get("latency", {}).get("method", task["info"].get("methods", ["mean_diff"])[0]),
        "lora_train_s": costs.get("lora_train_s", math.nan),
        "steering_cost_s": costs.get("extract_s", math.nan) + costs.get("calibrate_s", 0.0),
        "training": training_costs(task),
    }


def _effect(task: dict[str, Any], condition: str, base: dict[str, Any] | None, goal: int) -> float | None:
    """The goal-signed paired difference from unsteered (runs before paired rows: the difference of the means)."""
    paired = primary(task, condition, f"delta_{task['info']['metric']}")
    if paired is not None and paired["value"] is not None:
        return float(goal * paired["value"])
    own = primary(task, condition)
    if own is None or base is None or own["value"] is None or base["value"] is None:
        return None
    return float(goal * (own["value"] - base["value"]))


def training_costs(task: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """condition -> {seconds, peak_rss_mib, ...}: what training (or extracting) each method took; runs before the
    `training` record give the extraction's and LoRA's seconds only."""
    costs = task["costs"]
    if "training" in costs:
        return dict(costs["training"])
    first = task["info"].get("methods", ["mean_diff"])[0]
    found = {"steering": {"method": first, "seconds": costs.get("extract_s", math.nan)}}
    if "lora_train_s" in costs:
        found["lora"] = {"method": "lora", "seconds": costs["lora_train_s"]}
    return found


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _legend(doc: dict[str, Any]) -> str:
    """What '*' means: the paired test when the run has paired rows; older runs only had each condition's own CI."""
    paired = any(r["metric"] == f"delta_{t['info']['metric']}" for t in doc["tasks"] for r in t["rows"])
    if paired:
        test = "the 95% CI of its per-item difference from unsteered, on the same items, excludes 0"
    else:
        test = "its own 95% CI excludes the unsteered mean; this run predates the paired per-item differences"
    return (
        f"'*': the condition moved the metric ({test}). 'n/s': the stronger fine-tune did not, so no % of its effect "
        "is given (the % of fine-tuning table says why)."
    )


def _dose(cal: dict[str, Any]) -> str:
    """The relative dose of the calibrated scale, and the tokens it steers; older runs recorded neither."""
    dose = cal.get("dose")
    where = f", {cal['positions']} tokens" if cal.get("positions") else ""
    return "" if dose is None or math.isnan(dose) else f" (relative dose {dose:.3g}{where})"


SMOKE_NOTE = (
    "**Smoke test, not a measurement:** the quick subset runs every condition on a few items, one layer window and "
    "a short training, to show that everything runs. Its CIs are too wide to tell conditions apart; read the full "
    "suite's report for findings."
)


def markdown(doc: dict[str, Any]) -> str:
    lines = [f"# steerlab bench: {doc['meta']['suite']}", ""]
    meta = doc["meta"]
    lines.append(
        f"Model `{meta['model']}`; run time {meta['run_seconds']:.0f} s on {meta['threads']} CPU threads"
        f"{' (quick subset)' if meta.get('quick') else ''}; seed {meta['seed']}; bootstrap 95% CIs "
        f"over items. Effects are signed by each axis's goal (+ = moved the way the axis wants). {_legend(doc)}"
    )
    if meta.get("quick"):
        lines += ["", SMOKE_NOTE]
    if not meta.get("complete", True):
        lines.append("")
        lines.append("**Partial results: the run was still going (or was stopped) when this was written.**")
    if any(not in_budget(t) for t in doc["tasks"]):
        lines += ["", OUT_LEGEND]
    if any(_mark(t, c) == TEST_MARK for t in doc["tasks"] for c in [*steering_conditions(t), "steering+prompting"]):
        lines += ["", TEST_LEGEND]
    tasks = doc["tasks"]
    # Derived from the tasks, not read from the stored summary: older runs' summaries lack the newer fields.
    summaries = [summarise(t) for t in tasks]
    lines += _summary_table(tasks, summaries)
    lines += _share_table(tasks, summaries)
    lines += _cost_table(tasks, summaries)
    for task in doc["tasks"]:
        lines += ["", f"## {task['name']} ({task['info']['task']})", ""]
        cal = task["calibration"]
        lines.append(
            f"Calibrated on {cal['n_val']} validation items: layers {cal['layers'][0]}-{cal['layers'][-1]}, scale "
            f"{cal['scale']:g}{_dose(cal)} ({'within' if cal['within_budget'] else 'OUTSIDE'} the fluency budget: "
            "mean log-prob "
            f"within {100 * cal['budget']:.0f}% of unsteered, 3-gram repetition at most "
            f"{cal.get('repetition_budget', 0.1):.2f} above unsteered's {cal.get('base_repetition', 0.0):.2f}"
            f"{_margin(cal)}). Train {task['info']['n_train']}, test {task['info']['n_test']}."
        )
        for note in task["info"]["notes"]:
            lines.append(f"- {note}")
        lines += _methods_table(task)
        lines += ["", "| condition | metric | value | 95% CI | n |", "|---|---|---|---|---|"]
        for r in task["rows"]:
            ci = f"[{_f(r['ci'][0])}, {_f(r['ci'][1])}]"
            flag = _mark(task, r["condition"])
            lines.append(f"| {r['condition']}{flag} | {r['metric']} | {_f(r['value'])}{flag} | {ci} | {r['n']} |")
        for png in task.get("plots", []):
            lines.append(f"\n![{Path(png).stem}]({png})")
    if doc.get("plots"):
        lines += ["", "## Across axes", ""] + [f"![{Path(p).stem}]({p})" for p in doc["plots"]]
    if doc.get("interference"):
        from steerlab.evaluate.suite_kit import markdown as interference_markdown

        lines += interference_markdown(doc["interference"])
    return "\n".join(lines) + "\n"


COLUMN = {"fewshot": "few-shot", "lora": "LoRA", "finetune": "full FT"}


def _columns(tasks: list[dict[str, Any]]) -> list[str]:
    """Every steering condition any axis ran, then the shared conditions."""
    steering = order_conditions({c for t in tasks for c in steering_conditions(t)} or {"steering"})
    return [*steering, *SHARED]


def _summary_table(tasks: list[dict[str, Any]], summaries: list[dict[str, Any]]) -> list[str]:
    columns = ["unsteered", *_columns(tasks)[:-1], *FINETUNES, "steering+prompting"]
    head = "| axis | metric (goal) | " + " | ".join(COLUMN.get(c, c) for c in columns)
    lines = ["", "## Summary (test splits)", ""]
    lines += [head + " | fluency steered / unsteered | latency overhead |", "|" + "---|" * (len(columns) + 4)]
    for task, s in zip(tasks, summaries, strict=True):
        out = "" if in_budget(task) else OUT_MARK

        def cell(c: str, task: dict[str, Any] = task, s: dict[str, Any] = s) -> str:
            star = "*" if s["significant"].get(c) else ""
            return _f(s["values"].get(c)) + star + _mark(task, c)

        latency = f"{_f(s['latency_overhead_pct'], 1)}%"
        if s["latency_method"] != task["info"].get("methods", [s["latency_method"]])[0]:
            latency += f" ({s['latency_method']})"
        lines.append(
            f"| {s['name']}{out} | {s['metric']} ({s['goal']:+d}) | "
            + " | ".join(cell(c) for c in columns)
            + f" | {_f(s['fluency'].get('steering'), 2)}{out} / {_f(s['fluency'].get('unsteered'), 2)} | {latency} |"
        )
    return lines


def _share_table(tasks: list[dict[str, Any]], summaries: list[dict[str, Any]]) -> list[str]:
    """Each condition's paired effect as a % of the stronger fine-tune's, or n/s and why."""
    columns = _columns(tasks)
    lines = [
        "",
        "## % of fine-tuning (test splits)",
        "",
        "Each condition's paired effect on the primary metric as a % of the stronger fine-tune's (LoRA or full "
        "fine-tuning, whichever moved the metric more), only where that fine-tune's paired 95% CI excludes 0.",
        "",
        "| axis | baseline (paired effect) | " + " | ".join(COLUMN.get(c, c) for c in columns) + " | note |",
        "|" + "---|" * (len(columns) + 3),
    ]
    for task, s in zip(tasks, summaries, strict=True):
        baseline = s["finetune_baseline"]
        named = f"{LABELS[baseline]} ({_f(s['finetune_effect'])})" if baseline else "–"
        cells = [(_f(s["pct_of_finetune"].get(c), 0) if not s["pct_note"] else "n/s") + _mark(task, c) for c in columns]
        lines.append(f"| {s['name']} | {named} | " + " | ".join(cells) + f" | {s['pct_note'] or '–'} |")
    return lines


def _cost_table(tasks: list[dict[str, Any]], summaries: list[dict[str, Any]]) -> list[str]:
    """What each method's training took: seconds and peak memory, and the fine-tunes' early stopping."""
    measure = next((t["costs"]["memory_measure"] for t in tasks if "memory_measure" in t["costs"]), None)
    lines = ["", "## Training cost", ""]
    lines.append(
        "Wall seconds on this run's threads; for a steering method, making its vector (extraction or training), "
        "calibration excluded. Memory: " + (measure or "not recorded by this run") + "."
    )
    lines += [
        "",
        "| axis | condition | method | seconds | peak MiB | epochs (best / run) | validation loss (start → best) |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, s in zip(tasks, summaries, strict=True):
        for condition, cost in s["training"].items():
            curve = task["costs"].get(f"{condition}_curve")
            epochs = f"{curve['best_epoch']} / {curve['epochs_run']}" if curve else "–"
            loss = f"{_f(curve['val_loss'][0])} → {_f(curve['best_val_loss'])}" if curve else "–"
            lines.append(
                f"| {s['name']} | {condition} | {cost.get('method', condition)} | {_f(cost.get('seconds'), 1)} | "
                f"{_f(cost.get('peak_rss_mib'), 0)} | {epochs} | {loss} |"
            )
    return lines


def _methods_table(task: dict[str, Any]) -> list[str]:
    """One row per steering method (runs with several): its calibration and its test effect, paired with unsteered."""
    cals = method_calibrations(task)
    if len(cals) < 2:
        return []
    metric = task["info"]["metric"]
    head = f"| method | condition | layers | scale | budget | test fluency | {metric} | Δ vs unsteered [95% CI] |"
    lines = ["", head, "|---|---|---|---|---|---|---|---|"]
    base = primary(task, "unsteered", "fluency_logprob")
    for method, cal in cals.items():
        condition = cal["condition"]
        own, delta = primary(task, condition), primary(task, condition, f"delta_{metric}")
        mark = _mark(task, condition)
        paired = f"{_f(delta['value'])} [{_f(delta['ci'][0])}, {_f(delta['ci'][1])}]" if delta else "–"
        fluency = primary(task, condition, "fluency_logprob")
        tested = "–"
        if fluency is not None and base is not None:
            verdict = "OUTSIDE" if budget_broken_on_test(task, condition) else "within"
            tested = f"{_f(fluency['value'])} vs {_f(base['value'])}: {verdict}"
        lines.append(
            f"| {method} | {condition} | {cal['layers'][0]}-{cal['layers'][-1]} | {cal['scale']:g}{_dose(cal)} | "
            f"{'within' if cal.get('within_budget', True) else 'OUTSIDE'} | {tested} | "
            f"{_f(own['value'] if own else None)}{mark} | {paired}{mark} |"
        )
    chosen = task["info"].get("prompting_method")
    if chosen:
        lines.append(f"\nsteering+prompting uses {chosen} (the largest in-budget calibrated validation effect).")
    return [*lines, ""]


def html_page(doc: dict[str, Any], md_text: str, out_dir: Path) -> str:
    """A single self-contained page: tables as HTML, plots embedded as base64 PNGs."""
    body = []
    in_table = False
    for line in md_text.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if set(line.replace("|", "").strip()) <= {"-"}:
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("!["):
            src = line[line.index("(") + 1 : line.rindex(")")]
            data = base64.b64encode((out_dir / src).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(src)}" src="data:image/png;base64,{data}">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<p>• {html.escape(line[2:])}</p>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:100%;display:block;margin:8px 0}"
    )
    title = html.escape(f"steerlab bench: {doc['meta']['suite']}")
    head = f"<head><meta charset='utf-8'><title>{title}</title><style>{style}</style></head>"
    return f"<!doctype html><html>{head}<body>{''.join(body)}</body></html>"


def _task_doc(result: TaskResult) -> dict[str, Any]:
    return {"name": result.name, **result.as_json()}


def _task_plots(task: dict[str, Any], out_dir: Path) -> list[str]:
    folder = Path(task["name"])
    made = [
        plots.scale_curves(task, out_dir / folder / "metric_vs_scale.png"),
        plots.heatmap(task, out_dir / folder / "layer_scale_heatmap.png"),
        plots.condition_bars(task, out_dir / folder / "conditions.png"),
        plots.loss_curves(task, out_dir / folder / "finetune_loss.png"),
    ]
    return [str(p.relative_to(out_dir)) for p in made if p is not None]


def write_all(
    out_dir: Path,
    results: list[TaskResult],
    meta: dict[str, Any],
    kept: Sequence[dict[str, Any]] = (),
    order: Sequence[str] = (),
) -> dict[str, Any]:
    """results.json at the top (every row; calibration of the first axis, all axes under calibration.per_task),
    DIR/<axis>/results.json per axis in the exact single-task shape, report.md, report.html and the PNGs.

    `kept`: task documents of axes an earlier run finished (a resumed run), shown as they are; `order`: the axes'
    order in the report (default: kept, then new)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fresh = [_task_doc(r) for r in results]
    for task in fresh:
        task["plots"] = _task_plots(task, out_dir)
        single = {k: task[k] for k in ("rows", "calibration", "costs", "info")}
        (out_dir / task["name"] / "results.json").write_text(_dump(single))
    tasks = [*kept, *fresh]
    if order:
        tasks.sort(key=lambda t: order.index(t["name"]) if t["name"] in order else len(order))
    summary = [summarise(t) for t in tasks]
    first = tasks[0]["calibration"]
    doc: dict[str, Any] = {
        "rows": [r for t in tasks for r in t["rows"]],
        "calibration": {
            "layers": first["layers"],
            "scale": first["scale"],
            "task": tasks[0]["name"],
            "per_task": {t["name"]: t["calibration"] for t in tasks},
        },
        "summary": summary,
        "tasks": tasks,
        "meta": meta,
        "plots": [],
    }
    if len(tasks) > 1:
        shares = plots.finetune_share_bars(summary, out_dir / "pct_of_finetune.png")
        doc["plots"].append(str(shares.relative_to(out_dir)))
    write_doc(out_dir, doc)
    return doc


def write_doc(out_dir: Path, doc: dict[str, Any]) -> None:
    """results.json, report.md and report.html from one document (also used to add a section to a finished run)."""
    (out_dir / "results.json").write_text(_dump(doc))
    md_text = markdown(doc)
    (out_dir / "report.md").write_text(md_text)
    (out_dir / "report.html").write_text(html_page(doc, md_text, out_dir))


def add_interference(out_dir: Path, section: dict[str, Any]) -> dict[str, Any]:
    doc = json.loads((out_dir / "results.json").read_text())
    doc["interference"] = clean(section)
    doc["summary"] = [summarise(t) for t in doc["tasks"]]  # derived; a run written by an older version is refreshed
    write_doc(out_dir, doc)
    return doc


def clean(value: Any) -> Any:
    """NaN and infinities become null: strict JSON readers reject them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def _dump(doc: Any) -> str:
    return json.dumps(clean(doc), indent=1, default=_json_default, allow_nan=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
