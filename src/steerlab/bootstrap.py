"""Bootstrap confidence intervals with a fixed seed, so the same scores always give the same interval.

Below both the evaluation bench and interference: each reports its means and paired differences with these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["N_RESAMPLES", "SEED", "mean_ci", "nanmean", "paired_diffs"]

N_RESAMPLES = 2000
SEED = 0


def nanmean(values: Sequence[float]) -> float:
    """Mean of the values that are not NaN (unscorable items); NaN when none is."""
    real = [v for v in values if not math.isnan(v)]
    return sum(real) / len(real) if real else math.nan


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


def paired_diffs(after: Sequence[float], before: Sequence[float]) -> list[float]:
    """Per-item differences after − before, dropping items either side could not score."""
    if len(after) != len(before):
        raise ValueError(f"paired scores need the same items: {len(after)} vs {len(before)}")
    return [a - b for a, b in zip(after, before, strict=True) if not (math.isnan(a) or math.isnan(b))]
