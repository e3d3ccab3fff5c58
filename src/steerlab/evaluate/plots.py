"""PNG plots (matplotlib, Agg backend): metric vs scale per layer window, the layer x scale heatmap, condition bars."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from steerlab.evaluate.conditions import CONDITIONS


def _window_label(layers: list[int]) -> str:
    return f"layers {layers[0]}-{layers[-1]}" if len(layers) > 1 else f"layer {layers[0]}"


def scale_curves(task: dict[str, Any], path: Path) -> Path:
    """Validation metric vs scale for each calibrated window, plus the test sweep at the chosen window."""
    cal, metric = task["calibration"], task["info"]["metric"]
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
    ax.set_title(f"{task['name']}: {metric} vs scale")
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
    """Primary metric per condition on the test split, with bootstrap 95% CIs."""
    metric = task["info"]["metric"]
    rows = {r["condition"]: r for r in task["rows"] if r["metric"] == metric and r["condition"] in CONDITIONS}
    names = [c for c in CONDITIONS if c in rows]
    values = [rows[c]["value"] for c in names]
    errors = [
        [v - rows[c]["ci"][0] for c, v in zip(names, values, strict=True)],
        [rows[c]["ci"][1] - v for c, v in zip(names, values, strict=True)],
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(
        names,
        values,
        yerr=errors,
        capsize=4,
        color=["#999", "#1f77b4", "#ff7f0e", "#ffbb78", "#2ca02c", "#9467bd"][: len(names)],
    )
    ax.set_ylabel(metric)
    ax.set_title(f"{task['name']}: conditions on held-out items (n={task['info']['n_test']})")
    ax.tick_params(axis="x", labelrotation=20)
    return _save(fig, path)


def lora_share_bars(summary: list[dict[str, Any]], path: Path) -> Path:
    """% of the LoRA effect reached by steering, prompting and few-shot, per axis."""
    methods = ("steering", "prompting", "fewshot", "steering+prompting")
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        xs = [i + k * width for i in range(len(summary))]
        ys = [s["pct_of_lora"].get(method) for s in summary]
        ax.bar(xs, [0.0 if y is None or math.isnan(y) else y for y in ys], width, label=method)
    ax.axhline(100, color="grey", linestyle=":")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(summary))], [s["name"] for s in summary])
    ax.set_ylabel("% of the LoRA effect")
    ax.set_title("Effect relative to LoRA fine-tuning (test splits)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
