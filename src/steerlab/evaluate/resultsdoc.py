"""Reading one axis's results document (the shape of DIR/<axis>/results.json, plus its name): rows by condition
and metric, the steering conditions it ran, and each steering method's calibration. Runs written before a field
existed still read."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from steerlab.evaluate.conditions import CONDITIONS


def primary(task: dict[str, Any], condition: str, metric: str | None = None) -> dict[str, Any] | None:
    """The row of `condition` for `metric` (default: the axis's primary metric), or None when it was not run."""
    wanted = metric or task["info"]["metric"]
    return next((r for r in task["rows"] if r["condition"] == condition and r["metric"] == wanted), None)


def paired_effect(task: dict[str, Any], condition: str) -> tuple[float, list[float | None]] | None:
    """The goal-signed paired difference from unsteered on the primary metric and its goal-signed CI (low, high)."""
    row = primary(task, condition, f"delta_{task['info']['metric']}")
    if row is None or row["value"] is None:
        return None
    goal = task["info"]["goal"]
    lo, hi = row["ci"]
    bounds = sorted([goal * lo, goal * hi]) if lo is not None and hi is not None else [None, None]
    return goal * row["value"], bounds


def method_calibrations(task: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each steering method's calibration (with its condition); single-method runs have only the first's."""
    by_method = task.get("calibration_by_method")
    if by_method:
        return dict(by_method)
    first = task["info"].get("methods", ["mean_diff"])[0]
    return {first: {"condition": "steering", **task["calibration"]}}


def sweep_calibration(task: dict[str, Any]) -> dict[str, Any]:
    """The calibration of the method the sweep ran (the best one; runs before that recorded it: the first)."""
    chosen = task["info"].get("sweep_method")
    return method_calibrations(task).get(chosen, task["calibration"]) if chosen else task["calibration"]


def order_conditions(names: Iterable[str]) -> list[str]:
    """Conditions in the bench's order, each further steering method (`steering:M`) right after `steering`."""
    present = set(names)
    extra = sorted(n for n in present if n.startswith("steering:"))
    order = [c for c in CONDITIONS if c in present]
    at = order.index("steering") + 1 if "steering" in order else len(order)
    return order[:at] + extra + order[at:]


def steering_conditions(task: dict[str, Any]) -> list[str]:
    """`steering` and every `steering:M` the axis ran."""
    return [c for c in order_conditions(r["condition"] for r in task["rows"]) if c.split(":")[0] == "steering"]
