"""Pick the layer window and scale on a validation split: the largest effect whose fluency stays within budget.

Effect = goal * (metric at the candidate − metric unsteered), both on the validation items. Fluency = mean
per-token log-prob of greedy generations under the unsteered model; a candidate is within budget when it is no
lower than the unsteered value minus `budget` times its magnitude (default 10%), and when its repetition rate
(share of repeated 3-grams) rises at most `repetition_budget` above the unsteered one (default 0.1). The second
check is needed because a looping generation can score a high log-prob: the judge finds repeats predictable.

The log-prob check keeps a margin of `fluency_margin` standard errors (default 1) of the paired per-prompt difference
from unsteered: the candidate's mean minus that margin must clear the floor. Picking the largest effect among the
candidates that pass a noisy check favours those that passed by luck (on CAA coordination the chosen dose passed on
the validation generations and fell just under the floor on the test's), so a pick must pass with room to spare:
Breiman's one-standard-error rule, applied to the constraint.

Grids can be given as relative doses instead of raw scales. The dose of scale s on a window W is
d = |s| * sum over l in W of |v_l| / h_l, with h_l the mean residual norm at block l on the calibration prompts
(residual_norms): the same total the trained method spreads over its window. A dose means the same push against the
residual stream at every layer and model, so one grid (e.g. 0.1, 0.25, 0.5, 0.7) fits them all, where raw scales
depend on the vector's and the stream's norms.

An expert vector (ExpertVector: router-logit offsets) is calibrated the same way on the task metric and fluency, but
only on raw scales (multiples of its offsets, default DEFAULT_EXPERT_SCALES): a dose measures a push against the
residual stream's norm, which router logits are not part of, so a dose grid for one is refused.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from steerlab.bootstrap import nanmean
from steerlab.errors import SteerlabError
from steerlab.evaluate.fluency import fluency_scores
from steerlab.evaluate.scoring import PLAIN, Setting, generate_texts
from steerlab.evaluate.tasks import Task
from steerlab.kit import Kit, Positions
from steerlab.kitschema import check_positions
from steerlab.models import LoadedModel
from steerlab.residual_norms import measure_residual_norms
from steerlab.vector import ExpertVector, Vector

DEFAULT_BUDGET = 0.10
DEFAULT_REPETITION_BUDGET = 0.10
DEFAULT_FLUENCY_MARGIN = 1.0  # standard errors of the paired per-prompt log-prob difference (module docstring)
DEFAULT_SCALES = (0.125, 0.25, 0.5, 1.0)
DEFAULT_DOSES = (0.1, 0.25, 0.35, 0.5, 0.7)  # about 0.7 is reported safe; coherence collapses near 1.9
# Multiples of an expert vector's offsets. extract_experts' offsets are selection log-odds (a few logits at most),
# so 1 shifts each expert's router logit by its log-odds and 4 all but forces the chosen experts.
DEFAULT_EXPERT_SCALES = (0.5, 1.0, 2.0, 4.0)


@dataclass
class GridPoint:
    layers: list[int]
    scale: float
    metric: float
    effect: float
    fluency: float
    within_budget: bool
    repetition: float = 0.0
    dose: float = math.nan  # relative dose of this scale on this window (see the module docstring)
    fluency_se: float = 0.0  # standard error of the paired per-prompt log-prob difference from unsteered


@dataclass
class Calibration:
    layers: list[int]
    scale: float
    metric: str
    goal: int
    budget: float
    base_metric: float
    base_fluency: float
    fluency_floor: float
    within_budget: bool
    repetition_budget: float = DEFAULT_REPETITION_BUDGET
    base_repetition: float = 0.0
    grid: list[GridPoint] = field(default_factory=list)
    n_val: int = 0
    n_fluency: int = 0
    seconds: float = 0.0
    dose: float = math.nan  # the chosen scale's relative dose on the chosen window
    grid_unit: str = "scale"  # what the grid was given in: "scale" (raw magnitudes) or "dose"
    site: str = "residual"  # what the vector steers: "residual" or "router" (an expert vector's logit offsets)
    residual_norms: dict[str, float] = field(default_factory=dict)  # h per block (str keys: JSON-safe in the card)
    positions: str = "all"  # the tokens every candidate steered: "all", "prompt" or "generated"
    fluency_margin: float = 0.0  # standard errors the log-prob check kept in hand (0 in cards written before it)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def layer_windows(n_layers: int, count: int, width: int | None = None) -> list[list[int]]:
    """`count` contiguous windows of `width` blocks (default a sixth of the model), nearest the middle first.

    The outer sixths are left out: steering there mostly breaks fluency (see extract.recommend_layers).
    """
    w = width or max(1, round(n_layers / 6))
    margin = n_layers // 6
    starts = list(range(margin, max(margin + 1, n_layers - margin - w + 1), w))
    starts.sort(key=lambda s: abs(s + (w - 1) / 2 - (n_layers - 1) / 2))
    windows = [list(range(s, min(s + w, n_layers))) for s in starts[: max(1, count)]]
    return sorted(windows)


@dataclass
class _Probe:
    """Measures (metric, fluency, repetition) of one setting on the validation data."""

    base: LoadedModel
    task: Task
    items: Sequence[Any]
    prompts: list[str]
    gen_tokens: int

    def measure_with_norms(self, layers: Sequence[int]) -> tuple[Measured, dict[int, float]]:
        """The unsteered measurement, metering the residual norms h of `layers` during the same forwards."""
        with measure_residual_norms(self.base, layers) as meter:
            measured = self.measure(PLAIN)
        return measured, meter.means()

    def measure(self, setting: Setting) -> Measured:
        scores = self.task.evaluate(self.base, setting, self.items)
        if "fluency_logprob" not in scores:
            texts = generate_texts(self.base, setting, self.prompts, self.gen_tokens)
            scores.update(fluency_scores(self.base, self.prompts, texts))
        fluency = list(scores["fluency_logprob"])
        return Measured(nanmean(scores[self.task.metric]), nanmean(fluency), nanmean(scores["repetition"]), fluency)


@dataclass
class Measured:
    metric: float
    fluency: float
    repetition: float
    fluency_items: list[float]  # per fluency prompt, for the paired standard error


def paired_se(steered: Sequence[float], base: Sequence[float]) -> float:
    """Standard error of the mean per-prompt difference, over prompts both scored; 0 with fewer than two."""
    diffs = [a - b for a, b in zip(steered, base, strict=True) if math.isfinite(a) and math.isfinite(b)]
    if len(diffs) < 2:
        return 0.0
    return statistics.stdev(diffs) / math.sqrt(len(diffs))


def calibrate(
    base: LoadedModel,
    task: Task,
    vector: Vector,
    val_items: Sequence[Any],
    goal: int = 1,
    windows: Sequence[Sequence[int]] | None = None,
    scales: Sequence[float] = DEFAULT_SCALES,
    budget: float = DEFAULT_BUDGET,
    n_fluency: int = 8,
    gen_tokens: int = 24,
    repetition_budget: float = DEFAULT_REPETITION_BUDGET,
    doses: Sequence[float] | None = None,
    positions: Positions = "all",
    fluency_margin: float = DEFAULT_FLUENCY_MARGIN,
) -> Calibration:
    """Grid over windows x scales (magnitudes; the goal gives the sign), on validation items only.

    With `doses`, each window's scales are those doses converted through the residual norms (scales is ignored).
    `positions`: the tokens each candidate steers; the card records them with the scale they were calibrated at.
    """
    start = time.perf_counter()
    _check_arguments(goal, val_items, doses or scales, repetition_budget)
    check_positions(positions)
    router = isinstance(vector, ExpertVector)
    if router and doses:
        raise SteerlabError(_NO_EXPERT_DOSE)
    grid_windows = [list(w) for w in (windows or layer_windows(base.n_layers, 2))]
    missing = sorted({la for w in grid_windows for la in w} - set(vector.layers))
    if missing:
        what = "router offsets (its MoE blocks are " + _span(vector.layers) + ")" if router else "direction"
        raise SteerlabError(f"the vector has no {what} for layers {missing}; extract those layers or pick others.")
    probe = _Probe(base, task, val_items, task.fluency_prompts(val_items)[:n_fluency], gen_tokens)
    norms: dict[int, float] = {}
    if router:  # no residual norms: nothing of a router offset is measured against them
        plain = probe.measure(PLAIN)
    else:
        plain, norms = probe.measure_with_norms(sorted({la for w in grid_windows for la in w}))
    floor = plain.fluency - budget * abs(plain.fluency)
    cal = Calibration([], 0.0, task.metric, goal, budget, plain.metric, plain.fluency, floor, False)
    cal.repetition_budget, cal.base_repetition, cal.fluency_margin = repetition_budget, plain.repetition, fluency_margin
    cal.grid_unit, cal.residual_norms = ("dose" if doses else "scale"), {str(la): h for la, h in norms.items()}
    cal.site, cal.positions = ("router" if router else "residual"), positions
    for window in grid_windows:
        per_scale = math.nan if router else dose_per_scale(vector, norms, window)
        magnitudes = [d / per_scale for d in doses] if doses else list(scales)
        for magnitude in sorted(magnitudes):
            kit = Kit.single(vector, goal * magnitude, window, positions)
            got = probe.measure(Setting(f"steering@{goal * magnitude:g}", steering=kit))
            se = paired_se(got.fluency_items, plain.fluency_items)
            ok = _fits(cal, got.fluency, got.repetition, se)
            effect = goal * (got.metric - plain.metric)
            point = GridPoint(
                window, goal * magnitude, got.metric, effect, got.fluency, ok, got.repetition, magnitude * per_scale, se
            )
            cal.grid.append(point)
            if not ok:
                break  # larger scales in this window only lose more fluency
    _choose(cal)
    cal.n_val, cal.n_fluency, cal.seconds = len(val_items), len(probe.prompts), time.perf_counter() - start
    return cal


_NO_EXPERT_DOSE = (
    "this is an expert vector (router-logit offsets): a dose is a push against the residual stream's norm and is not "
    "defined for router logits. Calibrate it on raw scales, multiples of its offsets (`steerlab calibrate --scales "
    f"{','.join(f'{s:g}' for s in DEFAULT_EXPERT_SCALES)}`, the default for expert vectors)."
)


def grid_for(
    vector: Vector, scales: tuple[float, ...] | None, doses: tuple[float, ...] | None
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """The (scales, doses) grid a vector is calibrated on: as given for a residual vector; for an expert vector the
    scales given or DEFAULT_EXPERT_SCALES, and a dose grid is refused (see the module docstring)."""
    if not isinstance(vector, ExpertVector):
        return scales, doses
    if doses is not None:
        raise SteerlabError(_NO_EXPERT_DOSE)
    return scales or DEFAULT_EXPERT_SCALES, None


def _span(layers: Sequence[int]) -> str:
    return ", ".join(str(la) for la in layers)


def _check_arguments(goal: int, val_items: Sequence[Any], scales: Sequence[float], repetition_budget: float) -> None:
    if goal not in (1, -1):
        raise SteerlabError(f"goal must be +1 (more of the behaviour) or -1 (less), not {goal}.")
    if not val_items:
        raise SteerlabError("calibration needs a non-empty validation split.")
    if not scales or any(s <= 0 for s in scales):
        raise SteerlabError(f"calibration scales (or doses) must be positive magnitudes, got {list(scales)}.")
    if not 0 <= repetition_budget <= 1:
        raise SteerlabError(
            f"repetition budget {repetition_budget} is not a share of repeated 3-grams: give a value in [0, 1]."
        )


def _fits(cal: Calibration, fluency: float, repetition: float, se: float = 0.0) -> bool:
    """Within both budgets: log-prob, less the margin of `se`s, no lower than the floor; repetition no more than
    budget above unsteered.

    Written as "passes only when every comparison holds", so any NaN (unmeasured or broken) fails the budget.
    """
    fluent = fluency - cal.fluency_margin * se >= cal.fluency_floor
    return bool(fluent and repetition <= cal.base_repetition + cal.repetition_budget)


def _choose(cal: Calibration) -> None:
    """Best effect within budget; when nothing fits, the gentlest candidate, flagged as outside the budget."""
    fitting = [p for p in cal.grid if p.within_budget and not math.isnan(p.effect)]
    if fitting:
        best = max(fitting, key=lambda p: (p.effect, -abs(p.scale)))
        cal.within_budget = True
    else:
        # NaN fluency sorts last: a comparison with NaN would make max() depend on the grid order.
        best = max(cal.grid, key=lambda p: (-abs(p.scale), -math.inf if math.isnan(p.fluency) else p.fluency))
    cal.layers, cal.scale, cal.dose = list(best.layers), best.scale, best.dose


def dose_per_scale(vector: Vector, norms: dict[int, float], layers: Sequence[int]) -> float:
    """The relative dose of scale 1 on `layers`: sum of |v_l| / h_l. A dose d is the scale d / this."""
    if isinstance(vector, ExpertVector):
        raise SteerlabError(_NO_EXPERT_DOSE)
    total = 0.0
    for layer in layers:
        h, v = norms.get(layer, math.nan), float(vector.directions[layer].float().norm())
        if not (h > 0 and math.isfinite(h) and v > 0 and math.isfinite(v)):
            raise SteerlabError(
                f"cannot express a dose at block {layer}: vector norm {v:g}, residual norm {h}; "
                "the vector there is zero or broken, or the block was not measured. Give --scales instead."
            )
        total += v / h
    return total


def scale_for_dose(
    vector: Vector, norms: dict[str, float] | dict[int, float], layers: Sequence[int], dose: float
) -> float:
    """The scale magnitude whose relative dose on `layers` is `dose` (norms as recorded in Calibration)."""
    return dose / dose_per_scale(vector, {int(k): v for k, v in norms.items()}, layers)


def write_to_card(vector: Vector, cal: Calibration, task_name: str) -> Vector:
    """Record the chosen layers, scale and positions in the card (details and the dose in metadata['calibration']).

    An out-of-budget choice is written only on request (`steerlab calibrate --force`); the card then says so in
    `calibration.within_budget` (False) and `calibration.out_of_budget` (True), so nobody mistakes it for a safe dose.
    """
    vector.card.recommended_layers = list(cal.layers)
    vector.card.recommended_scale = float(cal.scale)
    vector.card.recommended_positions = cal.positions
    vector.card.metadata["calibration"] = {"task": task_name, **cal.as_dict(), "out_of_budget": not cal.within_budget}
    return vector
