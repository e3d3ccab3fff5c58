"""Max axes: the largest set of effective axes that, steered together, each keep their solo effect and fluency.

What "keeps its effect" means comes from an Effects judge. On task metrics (TaskJudge, used whenever the axes have
tasks) an axis keeps its effect in a combination when its paired 95% CI there still excludes 0 on its side and its
mean change is >= `keep_fraction` of its solo one. On activation projections (ProjectionJudge, when no tasks are
given) only the ratio is checked: that measure has no per-item CI.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from steerlab.interference.report import Combo
from steerlab.interference.runs import Config, Run
from steerlab.interference.task_runs import TaskRun

__all__ = ["Effects", "ProjectionJudge", "Search", "TaskJudge", "nonzero"]


def nonzero(value: float) -> float:
    """NaN for (near) zero, so a ratio over it reads as unknown instead of exploding."""
    return value if abs(value) > 1e-9 else math.nan


def _finite(value: float) -> float:
    return -math.inf if math.isnan(value) else value


class Effects(Protocol):
    """How the search reads axis j's effect in a configuration; `measure` is called before either is read."""

    name: str

    def measure(self, configs: Sequence[Config]) -> None: ...

    def effect(self, config: Config, axis: int) -> float: ...

    def holds(self, config: Config, axis: int) -> bool: ...


@dataclass
class ProjectionJudge:
    """Effects on the activation-projection measure (shifts in the unsteered model's read-out)."""

    run: Run
    name: str = "activation projection"

    def measure(self, configs: Sequence[Config]) -> None:
        self.run.measure(configs)

    def effect(self, config: Config, axis: int) -> float:
        return self.run.shift(config, axis)

    def holds(self, config: Config, axis: int) -> bool:
        return True


@dataclass
class TaskJudge:
    """Effects on each axis's own task metric, with the paired CI over its held-out items."""

    tasks: TaskRun
    name: str = "task metrics"

    def measure(self, configs: Sequence[Config]) -> None:
        self.tasks.measure(configs)

    def effect(self, config: Config, axis: int) -> float:
        return self.tasks.paired(config, axis)[0]

    def holds(self, config: Config, axis: int) -> bool:
        return self.tasks.holds(config, axis)


@dataclass
class Search:
    """Exhaustive over subsets (largest first) when they are few, else greedy: drop the weakest axis until one fits.

    `run` generates each configuration's text (fluency); `effects` judges each axis's effect in it."""

    run: Run
    effects: Effects
    keep_fraction: float
    floor: float
    labels: list[str]
    combos: list[Combo] = field(default_factory=list)

    def _measure(self, configs: Sequence[Config]) -> None:
        self.run.measure(configs)
        self.effects.measure(configs)

    def judge(self, config: Config) -> Combo:
        self._measure([config])
        measured, fx = self.run.results[config], self.effects
        kept = {self.labels[j]: fx.effect(config, j) / nonzero(fx.effect((j,), j)) for j in config}
        holds = {self.labels[j]: fx.holds(config, j) for j in config}
        fluency_ok = not math.isnan(measured.fluency) and measured.fluency >= self.floor
        effects_ok = all(not math.isnan(k) and k >= self.keep_fraction for k in kept.values())
        ok = fluency_ok and effects_ok and all(holds.values())
        combo = Combo([self.labels[j] for j in config], kept, measured.fluency, fluency_ok, ok, holds)
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
            self._measure(level)
            passing = [(c, self.judge(c)) for c in level]
            good = [(c, combo) for c, combo in passing if combo.ok]
            if good:
                return max(good, key=lambda item: min(item[1].kept.values()))[0]
        return self._single(effective)

    def _greedy(self, effective: list[int]) -> Config:
        current = tuple(effective)
        while len(current) > 1:
            combo = self.judge(current)
            if combo.ok:
                return current
            worst = min(current, key=lambda j: _finite(combo.kept[self.labels[j]]))
            if all(k >= self.keep_fraction for k in combo.kept.values()) and all(combo.holds.values()):
                # Effects survive but fluency does not: drop the axis that costs the most fluency alone.
                worst = min(current, key=lambda j: _finite(self.run.results[(j,)].fluency))
            current = tuple(j for j in current if j != worst)
        return self._single(list(current))
