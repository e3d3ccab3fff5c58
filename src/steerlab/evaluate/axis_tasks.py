"""The bench's tasks as interference axes: a Task and its held-out items, adapted to the AxisTask Protocol."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.evaluate.adhoc import load_items
from steerlab.evaluate.scoring import PLAIN, Setting
from steerlab.evaluate.tasks import Task, make_task
from steerlab.kit import Kit
from steerlab.models import LoadedModel

__all__ = ["KINDS", "BenchAxisTask", "axis_task", "parse_task_specs"]

KINDS = ("ab", "pair-logprob", "mcq", "sentiment", "formality")


@dataclass
class BenchAxisTask:
    """How one axis is benchmarked: a task and its held-out items (never the vector's training pairs)."""

    task: Task
    items: Sequence[Any]
    source: str = ""
    goal: int = 0  # +1 / -1: the way steering this axis should move its metric; 0: either (interference's AxisTask)

    @property
    def metric(self) -> str:
        return self.task.metric

    @property
    def n_items(self) -> int:
        return len(self.items)

    def score(self, model: LoadedModel, steering: Kit | None) -> list[float]:
        setting = PLAIN if steering is None else Setting("steered", steering=steering)
        return list(self.task.evaluate(model, setting, self.items)[self.task.metric])


def axis_task(kind: str, path: str | Path, max_items: int | None = None, gen_tokens: int = 24) -> BenchAxisTask:
    """An axis task from a file: `kind` is ab, pair-logprob, mcq, or a classifier (sentiment, formality)."""
    if kind not in KINDS:
        raise SteerlabError(f"unknown axis task {kind!r}: use one of {', '.join(KINDS)}.")
    if kind in ("sentiment", "formality"):
        task = make_task("classify", scorer=kind, max_new_tokens=gen_tokens)
        items = load_items("classify", Path(path), "eval")
    else:
        task, items = make_task(kind), load_items(kind, Path(path), "eval")
    if not items:
        raise SteerlabError(f"{path} holds no {kind} items.")
    return BenchAxisTask(task, items[:max_items] if max_items else items, str(path))


def parse_task_specs(specs: Sequence[str], max_items: int | None, gen_tokens: int) -> dict[str, BenchAxisTask]:
    """CLI `--task NAME=KIND:FILE` options -> {NAME: BenchAxisTask}."""
    out: dict[str, BenchAxisTask] = {}
    for spec in specs:
        name, sep, rest = spec.partition("=")
        kind, sep2, file = rest.partition(":")
        if not (sep and sep2 and name and kind and file):
            raise SteerlabError(f"cannot read --task {spec!r}: write NAME=KIND:FILE, KIND one of {', '.join(KINDS)}.")
        out[name] = axis_task(kind, file, max_items, gen_tokens)
    return out
