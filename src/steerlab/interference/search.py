"""Max axes: the largest set of effective axes that, steered together, each keep their solo effect and fluency."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from steerlab.interference.report import Combo
from steerlab.interference.runs import Config, Run

__all__ = ["Search", "nonzero"]


def nonzero(value: float) -> float:
    """NaN for (near) zero, so a ratio over it reads as unknown instead of exploding."""
    return value if abs(value) > 1e-9 else math.nan


def _finite(value: float) -> float:
    return -math.inf if math.isnan(value) else value


@dataclass
class Search:
    """Exhaustive over subsets (largest first) when they are few, else greedy: drop the weakest axis until one fits."""

    run: Run
    keep_fraction: float
    floor: float
    labels: list[str]
    combos: list[Combo] = field(default_factory=list)

    def judge(self, config: Config) -> Combo:
        measured = self.run.results[config]
        shift = self.run.shift
        kept = {self.labels[j]: shift(config, j) / nonzero(shift((j,), j)) for j in config}
        fluency_ok = not math.isnan(measured.fluency) and measured.fluency >= self.floor
        ok = fluency_ok and all(not math.isnan(k) and k >= self.keep_fraction for k in kept.values())
        combo = Combo([self.labels[j] for j in config], kept, measured.fluency, fluency_ok, ok)
        self.combos.append(combo)
        return combo

    def max_axes(self, effective: list[int], max_subsets: int) -> tuple[Config, str]:
        total = sum(math.comb(len(effective), k) for k in range(2, len(effective) + 1))
        if total <= max_subsets:
            return self._exhaustive(effective), "exhaustive"
        return self._greedy(effective), "greedy"

    def _single(self, effective: list[int]) -> Config:
        passing = [j for j in effective if self.judge((j,)).ok]
        return (passing[0],) if passing else ()

    def _exhaustive(self, effective: list[int]) -> Config:
        for k in range(len(effective), 1, -1):
            level = list(itertools.combinations(effective, k))
            self.run.measure(level)
            passing = [(c, self.judge(c)) for c in level]
            good = [(c, combo) for c, combo in passing if combo.ok]
            if good:
                return max(good, key=lambda item: min(item[1].kept.values()))[0]
        return self._single(effective)

    def _greedy(self, effective: list[int]) -> Config:
        current = tuple(effective)
        while len(current) > 1:
            self.run.measure([current])
            combo = self.judge(current)
            if combo.ok:
                return current
            worst = min(current, key=lambda j: _finite(combo.kept[self.labels[j]]))
            if all(k >= self.keep_fraction for k in combo.kept.values()):
                # Effects survive but fluency does not: drop the axis that costs the most fluency alone.
                worst = min(current, key=lambda j: _finite(self.run.results[(j,)].fluency))
            current = tuple(j for j in current if j != worst)
        return self._single(list(current))
