"""Interference between a kit's axes: their geometry, their measured cross-effects, and how many fit together.

Geometry (geometry.py): the cosine of every pair of directions at each layer both entries steer, before and after
Gram-Schmidt.

Measure of axis j: generate from held-out prompts under some steering, then run prompt + generation through the
UNSTEERED model and project the block-L_j outputs over the generated tokens on axis j's unit direction (readout.py).
L_j is the layer (among those the entry steers) where the axis's held-out pairs separate best, and shifts are reported
in units of that held-out gap (mean positive projection minus mean negative; heldout.py). Reading unsteered
activations of the generated text measures what the text expresses, not the vector that was added. The same forward
pass gives fluency: the mean log-probability of the generated tokens under the unsteered model.

Task cross-effects (cross_effects.py): the same matrix on each axis's own task metric, when tasks are given.

Expert axes (ExpertVector entries: router-logit offsets) have no residual direction, so the residual-projection
diagnostics are skipped for them and the report says so (`router_axes`, `notes`): no cosine, no held-out gap or
reading layer, and no activation measure of their own (NaN in their column of the cross-effects). What they do to
the residual axes' measures (their row) and, with tasks, to every axis's task metric is measured as for any axis.
Without tasks their own effect cannot be judged, so the max-axes search leaves them out.

Max axes (search.py): the largest set of axes applied together in which every axis keeps >= `keep_fraction` of its
solo effect and fluency stays within `fluency_tolerance` of the unsteered generations'. With tasks, effects are
judged on the task metrics: an axis counts (is "effective") when its solo paired 95% CI excludes 0 on its goal's
side, and keeps its effect in a combination when its CI there still does and its mean is >= `keep_fraction` of the
solo one. Without tasks they are judged on the projection measure (solo shift >= `min_solo_effect` gaps).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence

from steerlab.errors import SteerlabError
from steerlab.interference.axis import AxisTask
from steerlab.interference.cross_effects import check_axes, task_cross_effects
from steerlab.interference.geometry import cosine_by_layer, cosine_matrix, is_router, orthogonalize_kit
from steerlab.interference.heldout import HeldOut, calibrate, unit_direction
from steerlab.interference.report import InterferenceReport
from steerlab.interference.runs import Config, Run
from steerlab.interference.search import Effects, ProjectionJudge, Search, TaskJudge, nonzero
from steerlab.interference.task_runs import TaskRun
from steerlab.kit import Kit
from steerlab.kitfile import entry_names
from steerlab.models import LoadedModel
from steerlab.pairs import PairSet

__all__ = ["measure_interference"]


def _select_pairs(pairs: PairSet, max_pairs: int, seed: int) -> PairSet:
    if len(pairs) <= max_pairs:
        return pairs
    return pairs.subset(sorted(random.Random(seed).sample(range(len(pairs)), max_pairs)))


def _prompts_from_pairs(pair_sets: list[PairSet], per_axis: int) -> list[str]:
    prompts: list[str] = []
    for pairs in pair_sets:
        mine = [p.positive.user for p in pairs.pairs if p.positive.user.strip()]
        prompts += [p for p in dict.fromkeys(mine) if p not in prompts][:per_axis]
    if not prompts:
        raise SteerlabError("the held-out pairs have no user prompts to generate from; pass prompts explicitly.")
    return prompts


def _align_pairs(
    names: list[str], pairs: Mapping[str, PairSet] | Sequence[PairSet], max_pairs: int, seed: int
) -> list[PairSet]:
    if isinstance(pairs, Mapping):
        missing = [n for n in names if n not in pairs]
        if missing:
            raise SteerlabError(
                f"no held-out pairs for axes {missing}: give them (CLI: --pairs NAME=FILE), or record them in the "
                "kit file ('pairs' of each entry)."
            )
        unknown = sorted(set(pairs) - set(names))
        if unknown:
            raise SteerlabError(f"pairs were given for {unknown}, which are not axes of the kit ({', '.join(names)}).")
        chosen = [pairs[n] for n in names]
    else:
        chosen = list(pairs)
        if len(chosen) != len(names):
            raise SteerlabError(f"the kit has {len(names)} axes; give one held-out pair set per axis.")
    return [_select_pairs(p, max_pairs, seed) for p in chosen]


def _check_model(model: LoadedModel, kit: Kit, labels: list[str]) -> None:
    if len(kit.entries) < 2:
        raise SteerlabError("interference needs a kit of at least two entries.")
    for label, entry in zip(labels, kit.entries, strict=True):
        try:
            entry.vector.check_compatible(model)
        except SteerlabError as exc:
            raise SteerlabError(f"axis {label}: {exc}") from exc


def _config_name(config: Config, labels: list[str]) -> str:
    return "+".join(labels[i] for i in config) or "unsteered"


def _effective(run: Run, tasks: TaskRun | None, held: list[HeldOut | None], min_solo_effect: float) -> list[int]:
    """The axes the max-axes search considers: a significant solo effect on their task, else a projection shift
    (which an expert axis does not have: without tasks it is left out)."""
    if tasks is not None:
        return [j for j in range(len(held)) if tasks.holds((j,), j)]
    return [j for j, h in enumerate(held) if h is not None and abs(run.shift((j,), j)) >= min_solo_effect * abs(h.gap)]


def _held_out(model: LoadedModel, kit: Kit, pair_sets: list[PairSet], batch_size: int) -> list[HeldOut | None]:
    """Each residual axis's reading layer and held-out gap; None for an expert axis (it has no residual direction)."""
    return [
        None if is_router(e) else calibrate(model, e, p, batch_size)
        for e, p in zip(kit.entries, pair_sets, strict=True)
    ]


def _router_note(router: list[str], with_tasks: bool) -> list[str]:
    if not router:
        return []
    judged = (
        "their own effect is judged on their task metric"
        if with_tasks
        else "without tasks their own effect cannot be judged, so the max-axes search leaves them out (give each a "
        "task: --task NAME=KIND:FILE)"
    )
    return [
        f"axes {', '.join(router)} are expert entries (router-logit offsets): the residual-projection diagnostics "
        "(cosines, held-out reading layer and gap, their own activation measure) are not defined for them and were "
        f"skipped; their effect on the other axes' measures is measured, and {judged}."
    ]


def measure_interference(
    model: LoadedModel,
    kit: Kit,
    pairs: Mapping[str, PairSet] | Sequence[PairSet],
    names: Sequence[str] | None = None,
    prompts: Sequence[str] | None = None,
    prompts_per_axis: int = 2,
    max_pairs: int = 16,
    max_new_tokens: int = 24,
    batch_size: int = 16,
    keep_fraction: float = 0.8,
    fluency_tolerance: float = 0.1,
    min_solo_effect: float = 0.02,
    max_subsets: int = 64,
    seed: int = 0,
    tasks: Mapping[str, AxisTask] | None = None,
) -> InterferenceReport:
    """Cosines, measured cross-effects and the "max axes" figure of `kit` on `model` (see the module docstring).

    `pairs`: held-out contrastive pairs per axis (by name, or one per entry in order); at most `max_pairs` of each
    are used. `min_solo_effect` (without tasks): an axis whose solo shift is below this many held-out gaps counts as
    inert and is left out of the max-axes search (with tasks, one whose solo paired CI includes 0 is).
    `max_subsets`: above this many combinations the search turns greedy.
    `tasks`: an AxisTask with held-out items per axis (by name; the bench's are steerlab.evaluate.axis_tasks); when
    given, the cross-effects are also measured on each axis's task metric.
    """
    labels = list(names) if names is not None else entry_names(kit)
    _check_model(model, kit, labels)
    if tasks:
        check_axes(tasks, labels)  # before the long measurement, not after it
    pair_sets = _align_pairs(labels, pairs, max_pairs, seed)
    held = _held_out(model, kit, pair_sets, batch_size)
    units = [
        None if h is None else (h.read_layer, unit_direction(e.vector, h.read_layer))
        for e, h in zip(kit.entries, held, strict=True)
    ]
    chosen_prompts = list(prompts) if prompts else _prompts_from_pairs(pair_sets, prompts_per_axis)
    run = Run(model, kit.entries, chosen_prompts, units, max_new_tokens, batch_size)
    n = len(kit.entries)
    router = [labels[i] for i, e in enumerate(kit.entries) if is_router(e)]
    run.measure([(), *[(i,) for i in range(n)]])
    base = run.results[()]
    gaps = [nonzero(h.gap) if h is not None else math.nan for h in held]
    cross = [[run.shift((i,), j) / gaps[j] for j in range(n)] for i in range(n)]
    task_run = TaskRun(model, list(kit.entries), [tasks[name] for name in labels]) if tasks else None
    judge: Effects = TaskJudge(task_run) if task_run is not None else ProjectionJudge(run)
    effective = _effective(run, task_run, held, min_solo_effect)
    floor = base.fluency - fluency_tolerance * abs(base.fluency)
    search = Search(run, judge, keep_fraction, floor, labels)
    best, method = search.max_axes(effective, max_subsets)
    report = InterferenceReport(
        names=labels,
        scales=[float(e.scale) for e in kit.entries],
        cosine=cosine_matrix(kit),
        cosine_by_layer={
            f"{labels[i]}|{labels[j]}": cosine_by_layer(kit.entries[i], kit.entries[j])
            for i, j in itertools.combinations(range(n), 2)
        },
        cosine_orthogonalized=cosine_matrix(orthogonalize_kit(kit)),
        held_out={name: h for name, h in zip(labels, held, strict=True) if h is not None},
        cross_effect=cross,
        fluency_unsteered=base.fluency,
        fluency_solo={labels[j]: run.results[(j,)].fluency for j in range(n)},
        effective=[labels[j] for j in effective],
        combos=search.combos,
        max_axes=len(best),
        max_axes_set=[labels[j] for j in best],
        search=method,
        settings={
            "keep_fraction": keep_fraction,
            "fluency_tolerance": fluency_tolerance,
            "fluency_floor": floor,
            "min_solo_effect": min_solo_effect,
            "judged_by": judge.name,
            "max_new_tokens": max_new_tokens,
            "max_pairs": max_pairs,
            "n_prompts": len(chosen_prompts),
            "model": model.name,
        },
        prompts=chosen_prompts,
        samples={_config_name(c, labels): m.samples for c, m in run.results.items()},
        router_axes=router,
        notes=_router_note(router, bool(tasks)),
    )
    if tasks:
        report.task_effects = task_cross_effects(model, kit, tasks, labels, run=task_run)
    return report
