"""Bootstrap confidence intervals with a fixed seed, so the same scores always give the same interval."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

N_RESAMPLES = 2000
SEED = 0


def mean_ci(values: Sequence[float], level: float = 0.95, seed: int = SEED) -> tuple[float, float, float]:
    """(mean, lo, hi): percentile bootstrap of the mean. NaNs (unscorable items) are dropped first."""
    data = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if data.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if data.size == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(N_RESAMPLES, data.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return mean, float(lo), float(hi)


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


def paired_diffs(after: Sequence[float], before: Sequence[float]) -> list[float]:
    """Per-item differences after − before, dropping items either side could not score."""
    if len(after) != len(before):
        raise ValueError(f"paired scores need the same items: {len(after)} vs {len(before)}")
    return [a - b for a, b in zip(after, before, strict=True) if not (math.isnan(a) or math.isnan(b))]
