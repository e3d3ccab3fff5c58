"""Cross-effects of a kit's axes measured by each axis's task metric (the behaviour, not the activations).

Steer with entry i alone, at its kit scale, layers, positions and mode, and score every axis j's task on j's
held-out items: effect[i][j] = mean metric_j (steering i) − mean metric_j (unsteered). The diagonal is each axis's
own effect; a large off-diagonal value means steering i changes what j's benchmark measures. Each difference comes
with a paired bootstrap 95% CI over j's items (the same items are scored in every configuration).

Tasks come in through the AxisTask Protocol, so this package never imports the evaluation bench that provides them
(steerlab.evaluate.axis_tasks adapts its tasks to it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from steerlab.bootstrap import mean_ci, paired_diffs
from steerlab.errors import SteerlabError
from steerlab.kit import Kit
from steerlab.models import LoadedModel

__all__ = ["AxisTask", "TaskCrossEffects", "check_axes", "task_cross_effects"]


@runtime_checkable
class AxisTask(Protocol):
    """What interference needs from one axis's benchmark: a metric scored per held-out item under some steering."""

    @property
    def metric(self) -> str:
        """Name of the per-item metric `score` returns (shown in the report)."""
        ...

    @property
    def source(self) -> str:
        """Where the items come from (a file, a dataset split), for the report."""
        ...

    @property
    def n_items(self) -> int:
        """How many held-out items `score` scores."""
        ...

    def score(self, model: LoadedModel, steering: Kit | None) -> list[float]:
        """The metric of every item, in a fixed order, under `steering` (None: unsteered); NaN for unscorable."""
        ...


@dataclass
class TaskCrossEffects:
    names: list[str]
    metrics: list[str]
    unsteered: list[float]  # [j]: axis j's metric with no steering
    effect: list[list[float]]  # [i][j]: steering axis i alone moves axis j's metric by this much
    ci: list[list[list[float]]]  # [i][j]: paired bootstrap 95% CI of effect[i][j]
    n_items: list[int]
    sources: list[str] = field(default_factory=list)


def check_axes(tasks: Mapping[str, AxisTask], labels: Sequence[str]) -> None:
    """One task per kit axis, named as the axes are."""
    missing = [n for n in labels if n not in tasks]
    unknown = sorted(set(tasks) - set(labels))
    if missing or unknown:
        raise SteerlabError(
            f"give one task per kit axis: missing {missing or 'none'}, not axes of the kit {unknown or 'none'} "
            f"(the axes are {', '.join(labels)})."
        )


def _paired_ci(after: list[float], before: list[float]) -> list[float]:
    return list(mean_ci(paired_diffs(after, before))[1:])


def _mean(values: list[float]) -> float:
    return mean_ci(values)[0]


def task_cross_effects(
    model: LoadedModel, kit: Kit, tasks: Mapping[str, AxisTask], names: Sequence[str]
) -> TaskCrossEffects:
    """The matrix described in the module docstring; `names` label the kit's entries, in order."""
    labels = list(names)
    if len(labels) != len(kit.entries):
        raise SteerlabError(f"the kit has {len(kit.entries)} entries but {len(labels)} names were given.")
    check_axes(tasks, labels)
    axis_tasks = [tasks[n] for n in labels]
    base = [t.score(model, None) for t in axis_tasks]
    effect, ci = [], []
    for entry in kit.entries:
        steered = [t.score(model, Kit([entry])) for t in axis_tasks]
        effect.append([_mean(s) - _mean(b) for s, b in zip(steered, base, strict=True)])
        ci.append([_paired_ci(s, b) for s, b in zip(steered, base, strict=True)])
    return TaskCrossEffects(
        names=labels,
        metrics=[t.metric for t in axis_tasks],
        unsteered=[_mean(b) for b in base],
        effect=effect,
        ci=ci,
        n_items=[t.n_items for t in axis_tasks],
        sources=[t.source for t in axis_tasks],
    )
