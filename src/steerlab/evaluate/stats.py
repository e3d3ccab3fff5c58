"""Results rows with bootstrap CIs; the seeded bootstrap itself is steerlab.bootstrap (shared with interference)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from steerlab.bootstrap import N_RESAMPLES, SEED, mean_ci, paired_diffs

__all__ = ["N_RESAMPLES", "SEED", "mean_ci", "paired_diff_row", "paired_diffs", "row"]


def row(task: str, condition: str, metric: str, values: Sequence[float]) -> dict[str, object]:
    """One results row in the published shape."""
    mean, lo, hi = mean_ci(values)
    n = sum(1 for v in values if not math.isnan(v))
    return {"task": task, "condition": condition, "metric": metric, "value": mean, "ci": [lo, hi], "n": n}


def paired_diff_row(
    task: str, condition: str, metric: str, after: Sequence[float], before: Sequence[float]
) -> dict[str, object]:
    """Row `delta_<metric>`: mean of per-item differences (condition − unsteered, same items) and its bootstrap CI.

    Pairing removes the item-to-item spread both conditions share, so this CI is the one that says whether the
    condition moved the metric; the two conditions' own CIs overlap far more often.
    """
    return row(task, condition, f"delta_{metric}", paired_diffs(after, before))
