"""Each axis's task metric under a configuration of axes, scored once and kept: the cross-effects and the max-axes
search both read from here, so no configuration is scored twice."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from steerlab.bootstrap import mean_ci, paired_diffs
from steerlab.interference.axis import AxisTask
from steerlab.interference.runs import Config
from steerlab.kit import Kit, KitEntry
from steerlab.models import LoadedModel

__all__ = ["TaskRun", "goal_of"]


def goal_of(task: AxisTask) -> int:
    """Which way the axis should move its metric: an AxisTask's optional `goal` (+1 / -1); 0 (absent) = either."""
    goal = getattr(task, "goal", 0)
    return 0 if not goal else (1 if goal > 0 else -1)


@dataclass
class TaskRun:
    """Per-item scores of axis j's task with the axes of a configuration steered together (() = unsteered)."""

    model: LoadedModel
    entries: list[KitEntry]
    tasks: list[AxisTask]
    scores: dict[tuple[Config, int], list[float]] = field(default_factory=dict)

    def score(self, config: Config, axis: int) -> list[float]:
        key = (config, axis)
        if key not in self.scores:
            steering = Kit([self.entries[i] for i in config]) if config else None
            self.scores[key] = self.tasks[axis].score(self.model, steering)
        return self.scores[key]

    def measure(self, configs: Sequence[Config]) -> None:
        """Score every axis of each configuration on its own task (what the max-axes search judges)."""
        for config in configs:
            for axis in config:
                self.score(config, axis)

    def paired(self, config: Config, axis: int) -> tuple[float, float, float]:
        """(mean, lo, hi) of the per-item change from unsteered: a paired bootstrap 95% CI."""
        return mean_ci(paired_diffs(self.score(config, axis), self.score((), axis)))

    def holds(self, config: Config, axis: int) -> bool:
        """The axis's paired CI in `config` excludes 0 on the side it should move: its goal, else its solo sign."""
        _, lo, hi = self.paired(config, axis)
        side = goal_of(self.tasks[axis]) or _sign(self.paired((axis,), axis)[0])
        if math.isnan(lo) or side == 0:
            return False
        return lo > 0 if side > 0 else hi < 0


def _sign(value: float) -> int:
    if math.isnan(value) or value == 0:
        return 0
    return 1 if value > 0 else -1
