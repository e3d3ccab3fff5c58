"""Benchmarks and the measuring helpers every bench module shares.

On two noisy shared cores a figure is only meaningful next to its control, measured in the same run: the helpers
here alternate conditions round by round (ABBA order, so a slow drift in background load cancels out) and sum the
rounds up as medians with their spread. `bench/run_all.py` discovers the `bench_*.py` modules and writes results.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

# A condition either times itself (returns seconds, e.g. a subprocess that excludes its start-up) or returns None
# and is timed here with the wall clock around the call.
Condition = Callable[[], float | None]


def choose_threads(default: int) -> tuple[int, str]:
    """Threads for torch, and why: `BENCH_THREADS` if set; 1 on a machine already busier than its cores.

    On two cores under a load of ~12, a decode step measured 2.4-2.9 s with two OpenMP threads and 0.22 s with one:
    each parallel region waits for a thread the scheduler has parked. Figures taken like that measure the stall.
    """
    if os.environ.get("BENCH_THREADS"):
        return int(os.environ["BENCH_THREADS"]), "BENCH_THREADS"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > cores and default > 1:
        return 1, f"load average {load:.1f} on {cores} cores: one thread avoids OpenMP stalls under contention"
    return default, "torch default"


def timed(condition: Condition) -> float:
    start = time.perf_counter()
    reported = condition()
    elapsed = time.perf_counter() - start
    return elapsed if reported is None else float(reported)


def round_order(names: list[str], round_index: int) -> list[str]:
    """ABCD, DCBA, ABCD, ...: each condition's mean position in the sequence is the same over two rounds."""
    return list(names) if round_index % 2 == 0 else list(reversed(names))


def interleave(conditions: Mapping[str, Condition], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per round for each condition; `warmup` untimed rounds first (allocator, caches, lazy imports)."""
    names = list(conditions)
    for _ in range(warmup):
        for name in names:
            conditions[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in round_order(names, r):
            times[name].append(timed(conditions[name]))
    return times


def summary(samples: list[float]) -> dict[str, Any]:
    """Median and spread of one condition's samples (seconds)."""
    ordered = sorted(samples)
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "q1": _quantile(ordered, 0.25),
        "q3": _quantile(ordered, 0.75),
        "n": len(ordered),
    }


def ratio(treated: list[float], control: list[float]) -> dict[str, Any]:
    """treated/control, from samples paired by round: the median of the per-round ratios (the headline, since
    each round's two sides share its background load), their quartiles, and the ratio of the plain medians."""
    if len(treated) != len(control) or not treated:
        raise ValueError("ratio() needs the same non-zero number of samples on both sides, paired by round")
    per_round = sorted(t / c for t, c in zip(treated, control, strict=True))
    return {
        "ratio": statistics.median(per_round),
        "ratio_of_medians": statistics.median(treated) / statistics.median(control),
        "paired_q1": _quantile(per_round, 0.25),
        "paired_q3": _quantile(per_round, 0.75),
        "paired_min": per_round[0],
        "paired_max": per_round[-1],
        "n": len(per_round),
    }


def spread_text(stats: Mapping[str, Any]) -> str:
    """'IQR 0.99-1.02 (n=200)' for a ratio() result."""
    return f"IQR {stats['paired_q1']:.3f}-{stats['paired_q3']:.3f} (n={stats['n']})"


def _quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks, on an already sorted list."""
    if len(ordered) == 1:
        return ordered[0]
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
