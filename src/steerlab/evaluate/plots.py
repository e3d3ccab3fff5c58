"""PNG plots (matplotlib, Agg backend): metric vs scale per layer window, the layer x scale heatmap, condition bars,
the fine-tunes' loss curves and the % of fine-tuning across axes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from steerlab.evaluate.conditions import FINETUNES
from steerlab.evaluate.resultsdoc import order_conditions, sweep_calibration


def _window_label(layers: list[int]) -> str:
    return f"layers {layers[0]}-{layers[-1]}" if len(layers) > 1 else f"layer {layers[0]}"


def scale_curves(task: dict[str, Any], path: Path) -> Path:
    """Validation metric vs scale for each calibrated window, plus the test sweep at the chosen window (both for the
    method the sweep ran)."""
    cal, metric = sweep_calibration(task), task["info"]["metric"]
    fig, ax = plt.subplots(figsize=(6, 4))
    windows: dict[str, list[tuple[float, float]]] = {}
    for point in cal["grid"]:
        windows.setdefault(_window_label(point["layers"]), [(0.0, cal["base_metric"])]).append(
            (point["scale"], point["metric"])
        )
    for label, points in windows.items():
        xs, ys = zip(*sorted(points), strict=True)
        ax.plot(xs, ys, marker="o", label=f"validation, {label}")
    sweep = _sweep(task, metric)
    if sweep:
        xs, ys, lo, hi = zip(*sweep, strict=True)
        ax.errorbar(
            xs,
            ys,
            yerr=[[y - a for y, a in zip(ys, lo, strict=True)], [b - y for y, b in zip(ys, hi, strict=True)]],
            marker="s",
            color="black",
            capsize=3,
            label=f"test sweep, {_window_label(cal['layers'])}",
        )
    ax.axvline(cal["scale"], color="grey", linestyle=":", label=f"chosen scale {cal['scale']:g}")
    ax.set_xlabel("steering scale")
    ax.set_ylabel(metric)
    method = task["info"].get("sweep_method")
    ax.set_title(f"{task['name']}: {metric} vs scale" + (f" ({method})" if method else ""))
    ax.legend(fontsize=7)
    return _save(fig, path)


def _sweep(task: dict[str, Any], metric: str) -> list[tuple[float, float, float, float]]:
    points = []
    for row in task["rows"]:
        if row["metric"] != metric:
            continue
        if row["condition"] == "unsteered":
            points.append((0.0, row["value"], *row["ci"]))
        elif row["condition"].startswith("steering@"):
            points.append((float(row["condition"].split("@")[1]), row["value"], *row["ci"]))
    return sorted(points)


def heatmap(task: dict[str, Any], path: Path) -> Path:
    """Effect (goal-signed change of the metric) for each layer window x scale on validation; blank = not run."""
    cal = task["calibration"]
    windows = sorted({tuple(p["layers"]) for p in cal["grid"]})
    scales = sorted({p["scale"] for p in cal["grid"]})
    grid = [[math.nan] * len(scales) for _ in windows]
    for p in cal["grid"]:
        grid[windows.index(tuple(p["layers"]))][scales.index(p["scale"])] = p["effect"]
    fig, ax = plt.subplots(figsize=(1.2 * len(scales) + 3, 0.6 * len(windows) + 2))
    image = ax.imshow(grid, cmap="RdBu", aspect="auto")
    limit = max([abs(v) for row in grid for v in row if not math.isnan(v)] + [1e-9])
    image.set_clim(-limit, limit)
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            if not math.isnan(value):
                ax.text(j, i, f"{value:+.3f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(scales)), [f"{s:g}" for s in scales])
    ax.set_yticks(range(len(windows)), [_window_label(list(w)) for w in windows])
    ax.set_xlabel("scale")
    ax.set_title(f"{task['name']}: effect on validation ({task['info']['metric']})")
    fig.colorbar(image, ax=ax)
    return _save(fig, path)


def condition_bars(task: dict[str, Any], path: Path) -> Path:
    """Primary metric per condition (every steering method's included) on the test split, with bootstrap 95% CIs."""
    metric = task["info"]["metric"]
    rows = {r["condition"]: r for r in task["rows"] if r["metric"] == metric}
    names = order_conditions(rows)
    values = [rows[c]["value"] for c in names]
    errors = [
        [v - rows[c]["ci"][0] for c, v in zip(names, values, strict=True)],
        [rows[c]["ci"][1] - v for c, v in zip(names, values, strict=True)],
    ]
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(names)), 4))
    ax.bar(names, values, yerr=errors, capsize=4, color=[_colour(c) for c in names])
    ax.set_ylabel(metric)
    ax.set_title(f"{task['name']}: conditions on held-out items (n={task['info']['n_test']})")
    ax.tick_params(axis="x", labelrotation=25)
    return _save(fig, path)


_COLOURS = {
    "unsteered": "#999",
    "prompting": "#ff7f0e",
    "fewshot": "#ffbb78",
    "lora": "#2ca02c",
    "finetune": "#98df8a",
    "steering+prompting": "#9467bd",
}
_STEERING = ("#1f77b4", "#17becf", "#aec7e8", "#393b79", "#6b6ecf")


def _colour(condition: str) -> str:
    """One colour per condition in every plot; steering methods share blues."""
    if condition in _COLOURS:
        return _COLOURS[condition]
    return _STEERING[0] if condition == "steering" else _STEERING[1 + sum(map(ord, condition)) % (len(_STEERING) - 1)]


def loss_curves(task: dict[str, Any], path: Path) -> Path | None:
    """Training and validation loss per epoch of each fine-tune the axis ran, the kept epoch marked; None if none."""
    curves = {name: task["costs"][f"{name}_curve"] for name in FINETUNES if f"{name}_curve" in task["costs"]}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        colour = _colour(name)
        ax.plot(range(1, len(curve["train_loss"]) + 1), curve["train_loss"], "--", color=colour, label=f"{name} train")
        ax.plot(range(len(curve["val_loss"])), curve["val_loss"], "-o", color=colour, label=f"{name} validation")
        ax.plot([curve["best_epoch"]], [curve["best_val_loss"]], "*", color="black", markersize=12)
    ax.set_xlabel("epoch (0 = before training)")
    ax.set_ylabel("loss per answer token (nats)")
    ax.set_title(f"{task['name']}: fine-tuning loss (star = kept epoch)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def finetune_share_bars(summary: list[dict[str, Any]], path: Path) -> Path:
    """% of the stronger fine-tune's effect reached by each steering method and the prompting conditions, per
    axis; axes where that fine-tune moved nothing are labelled n/s."""
    methods = order_conditions({c for s in summary for c in s["pct_of_finetune"]} - set(FINETUNES))
    methods = methods or ["steering"]
    fig, ax = plt.subplots(figsize=(max(8, 1.5 * len(summary)), 4))
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        xs = [i + k * width for i in range(len(summary))]
        ys = [s["pct_of_finetune"].get(method, math.nan) for s in summary]
        ax.bar(xs, [0.0 if math.isnan(y) else y for y in ys], width, label=method, color=_colour(method))
    for i, s in enumerate(summary):
        if s["pct_note"]:
            ax.text(i + 0.4 - width / 2, 0, "n/s", ha="center", va="bottom", fontsize=9)
    ax.axhline(100, color="grey", linestyle=":")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(summary))], [s["name"] for s in summary])
    ax.set_ylabel("% of the stronger fine-tune's effect")
    ax.set_title("Effect relative to the stronger of LoRA and full fine-tuning (test splits)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
