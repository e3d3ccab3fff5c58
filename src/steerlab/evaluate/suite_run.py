"""Running a list of bench axes into one results folder, one axis at a time, and resuming a stopped run.

A full suite on the default model takes hours on two CPU cores, longer than one working session. Every finished axis is
written at once, so a run that is stopped leaves what it measured; `resume=True` then keeps those axes and runs only
the missing ones. An axis is only kept when the settings that decide its numbers (model, suite, sizes, grids, budgets,
conditions, methods, schedules) are the ones of this run: mixing axes measured under different settings into one table
would make its rows incomparable, so a mismatch is refused with the keys that differ.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.evaluate.report import write_all
from steerlab.evaluate.runner import RunOptions, TaskResult, TaskSpec, run_task
from steerlab.methods import effective_settings
from steerlab.models import LoadedModel
from steerlab.vector import Vector


def run_settings(opts: RunOptions, **context: Any) -> dict[str, Any]:
    """What decides an axis's numbers, as plain JSON: the run options (not the progress log) plus `context`
    (model, suite, quick)."""
    fields = {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts) if f.name != "log"}
    plain = {k: _plain(v) for k, v in fields.items()}
    # The trainers' defaults decide numbers too, and they change between versions; method_options alone misses that.
    plain["method_settings"] = {m: effective_settings(m, opts.method_options.get(m, {})) for m in opts.methods}
    return json.loads(json.dumps({**context, **plain}, default=str))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


@dataclasses.dataclass
class ResumePlan:
    kept: list[dict[str, Any]]  # finished axes' task documents, as the earlier run wrote them
    todo: list[TaskSpec]
    seconds_before: float  # run time already spent on the kept axes


def plan_resume(out_dir: Path, specs: Sequence[TaskSpec], settings: dict[str, Any]) -> ResumePlan:
    """The axes of `specs` already finished in out_dir under the same settings, and those still to run."""
    path = out_dir / "results.json"
    if not path.is_file():
        return ResumePlan([], list(specs), 0.0)
    doc = json.loads(path.read_text())
    meta = doc.get("meta", {})
    before = meta.get("settings")
    if before is None:
        raise SteerlabError(
            f"{path} was written by a run that did not record its settings, so its axes cannot be resumed safely; "
            "use a new --out, or run without --resume to overwrite it."
        )
    differing = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
    if differing:
        raise SteerlabError(
            f"--resume: {path} was measured with other settings ({', '.join(differing)}); give the same options "
            "as that run, or use a new --out."
        )
    wanted = {s.name for s in specs}
    kept = [t for t in doc.get("tasks", []) if t["name"] in wanted and _sizes_match(t, specs)]
    done = {t["name"] for t in kept}
    return ResumePlan(kept, [s for s in specs if s.name not in done], float(meta.get("run_seconds", 0.0)))


def _sizes_match(task: dict[str, Any], specs: Sequence[TaskSpec]) -> bool:
    """A kept axis must have been measured on the same split sizes (the data may have changed under it)."""
    spec = next(s for s in specs if s.name == task["name"])
    info = task.get("info", {})
    return (info.get("n_train"), info.get("n_val"), info.get("n_test")) == (
        len(spec.train),
        len(spec.val),
        len(spec.test),
    )


def run_axes(
    base: LoadedModel,
    specs: Sequence[TaskSpec],
    opts: RunOptions,
    out_dir: Path,
    meta: dict[str, Any],
    resume: bool = False,
    announce: Callable[[TaskSpec], None] | None = None,
) -> tuple[dict[str, Any], dict[str, Vector]]:
    """Run every axis (or, with `resume`, every unfinished one) and rewrite the folder after each.

    Returns the final document and every axis's calibrated vector by name, kept axes' read back from their folders.
    """
    started = time.perf_counter()
    settings = meta["settings"]
    plan = plan_resume(out_dir, specs, settings) if resume else ResumePlan([], list(specs), 0.0)
    order = [s.name for s in specs]
    results: list[TaskResult] = []
    doc: dict[str, Any] = {}
    meta = {**meta, "resumed_axes": [t["name"] for t in plan.kept]}
    if not plan.todo:
        doc = _write(out_dir, results, plan, order, meta, started)
    for spec in plan.todo:
        if announce is not None:
            announce(spec)
        results.append(run_task(base, spec, opts, out_dir / spec.name))
        doc = _write(out_dir, results, plan, order, meta, started)
    vectors = {t["name"]: Vector.load(out_dir / t["name"] / "vector.safetensors") for t in plan.kept}
    vectors.update({r.name: r.vector for r in results})
    return doc, {n: vectors[n] for n in order if n in vectors}


def _write(
    out_dir: Path,
    results: list[TaskResult],
    plan: ResumePlan,
    order: list[str],
    meta: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    finished = len(results) + len(plan.kept)
    meta = {**meta, "run_seconds": plan.seconds_before + time.perf_counter() - started}
    meta["complete"] = finished == len(order)
    return write_all(out_dir, results, meta, kept=plan.kept, order=order)
