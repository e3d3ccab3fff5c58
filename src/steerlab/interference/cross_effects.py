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

from steerlab.bootstrap import mean_ci, paired_diffs
from steerlab.errors import SteerlabError
from steerlab.interference.axis import AxisTask
from steerlab.interference.task_runs import TaskRun
from steerlab.kit import Kit
from steerlab.models import LoadedModel

__all__ = ["AxisTask", "TaskCrossEffects", "check_axes", "task_cross_effects"]


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
    model: LoadedModel,
    kit: Kit,
    tasks: Mapping[str, AxisTask],
    names: Sequence[str],
    run: TaskRun | None = None,
) -> TaskCrossEffects:
    """The matrix described in the module docstring; `names` label the kit's entries, in order. `run`: the
    scores already taken (the max-axes search reuses the solo ones); None starts afresh."""
    labels = list(names)
    if len(labels) != len(kit.entries):
        raise SteerlabError(f"the kit has {len(kit.entries)} entries but {len(labels)} names were given.")
    check_axes(tasks, labels)
    scores = run or TaskRun(model, list(kit.entries), [tasks[n] for n in labels])
    n = len(labels)
    base = [scores.score((), j) for j in range(n)]
    effect, ci = [], []
    for i in range(n):
        steered = [scores.score((i,), j) for j in range(n)]
        effect.append([_mean(s) - _mean(b) for s, b in zip(steered, base, strict=True)])
        ci.append([_paired_ci(s, b) for s, b in zip(steered, base, strict=True)])
    return TaskCrossEffects(
        names=labels,
        metrics=[tasks[n].metric for n in labels],
        unsteered=[_mean(b) for b in base],
        effect=effect,
        ci=ci,
        n_items=[tasks[n].n_items for n in labels],
        sources=[tasks[n].source for n in labels],
    )
