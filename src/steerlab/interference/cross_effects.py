"""Cross-effects of a kit's axes measured by each axis's bench task metric (the behaviour, not the activations).

Steer with entry i alone, at its kit scale, layers, positions and mode, and evaluate every axis j's task on j's
held-out items: effect[i][j] = mean metric_j (steering i) − mean metric_j (unsteered). The diagonal is each axis's
own effect; a large off-diagonal value means steering i changes what j's benchmark measures. Each difference comes
with a paired bootstrap 95% CI over j's items (the same items are scored in every configuration; stats.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.evaluate import stats
from steerlab.evaluate.adhoc import load_items
from steerlab.evaluate.scoring import PLAIN, Setting
from steerlab.evaluate.tasks import Task, make_task
from steerlab.kit import Kit
from steerlab.models import LoadedModel

KINDS = ("ab", "pair-logprob", "mcq", "sentiment", "formality")


@dataclass
class AxisTask:
    """How one axis is benchmarked: a task and its held-out items (never the vector's training pairs)."""

    task: Task
    items: Sequence[Any]
    source: str = ""


@dataclass
class TaskCrossEffects:
    names: list[str]
    metrics: list[str]
    unsteered: list[float]  # [j]: axis j's metric with no steering
    effect: list[list[float]]  # [i][j]: steering axis i alone moves axis j's metric by this much
    ci: list[list[list[float]]]  # [i][j]: paired bootstrap 95% CI of effect[i][j]
    n_items: list[int]
    sources: list[str] = field(default_factory=list)


def axis_task(kind: str, path: str | Path, max_items: int | None = None, gen_tokens: int = 24) -> AxisTask:
    """An AxisTask from a file: `kind` is ab, pair-logprob, mcq, or a classifier (sentiment, formality)."""
    if kind not in KINDS:
        raise SteerlabError(f"unknown axis task {kind!r}: use one of {', '.join(KINDS)}.")
    if kind in ("sentiment", "formality"):
        task = make_task("classify", scorer=kind, max_new_tokens=gen_tokens)
        items = load_items("classify", Path(path), "eval")
    else:
        task, items = make_task(kind), load_items(kind, Path(path), "eval")
    if not items:
        raise SteerlabError(f"{path} holds no {kind} items.")
    return AxisTask(task, items[:max_items] if max_items else items, str(path))


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
    return list(stats.mean_ci(stats.paired_diffs(after, before))[1:])


def _mean(values: list[float]) -> float:
    return stats.mean_ci(values)[0]


def task_cross_effects(
    model: LoadedModel, kit: Kit, tasks: Mapping[str, AxisTask], names: Sequence[str]
) -> TaskCrossEffects:
    """The matrix described in the module docstring; `names` label the kit's entries, in order."""
    labels = list(names)
    if len(labels) != len(kit.entries):
        raise SteerlabError(f"the kit has {len(kit.entries)} entries but {len(labels)} names were given.")
    check_axes(tasks, labels)
    axis_tasks = [tasks[n] for n in labels]
    base = [_scores(model, PLAIN, t) for t in axis_tasks]
    effect, ci = [], []
    for i, entry in enumerate(kit.entries):
        setting = Setting(f"steer:{labels[i]}", steering=Kit([entry]))
        steered = [_scores(model, setting, t) for t in axis_tasks]
        effect.append([_mean(s) - _mean(b) for s, b in zip(steered, base, strict=True)])
        ci.append([_paired_ci(s, b) for s, b in zip(steered, base, strict=True)])
    return TaskCrossEffects(
        names=labels,
        metrics=[t.task.metric for t in axis_tasks],
        unsteered=[_mean(b) for b in base],
        effect=effect,
        ci=ci,
        n_items=[len(t.items) for t in axis_tasks],
        sources=[t.source for t in axis_tasks],
    )


def _scores(model: LoadedModel, setting: Setting, axis: AxisTask) -> list[float]:
    return list(axis.task.evaluate(model, setting, axis.items)[axis.task.metric])


def parse_task_specs(specs: Sequence[str], max_items: int | None, gen_tokens: int) -> dict[str, AxisTask]:
    """CLI `--task NAME=KIND:FILE` options -> {NAME: AxisTask}."""
    out: dict[str, AxisTask] = {}
    for spec in specs:
        name, sep, rest = spec.partition("=")
        kind, sep2, file = rest.partition(":")
        if not (sep and sep2 and name and kind and file):
            raise SteerlabError(f"cannot read --task {spec!r}: write NAME=KIND:FILE, KIND one of {', '.join(KINDS)}.")
        out[name] = axis_task(kind, file, max_items, gen_tokens)
    return out
