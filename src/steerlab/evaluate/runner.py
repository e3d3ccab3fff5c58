"""One task, end to end: extract on the train split, calibrate on validation, compare conditions on test."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.evaluate import stats
from steerlab.evaluate.calibrate import (
    DEFAULT_BUDGET,
    DEFAULT_FLUENCY_MARGIN,
    DEFAULT_REPETITION_BUDGET,
    DEFAULT_SCALES,
    Calibration,
    calibrate,
    layer_windows,
    scale_for_dose,
    write_to_card,
)
from steerlab.evaluate.conditions import CONDITIONS, build_conditions, method_condition, steering_kit, sweep_name
from steerlab.evaluate.finetune import FinetuneConfig, train_finetune
from steerlab.evaluate.fluency import fluency_scores
from steerlab.evaluate.lora import LoraConfig, train_lora
from steerlab.evaluate.memory import MEASURE, PeakMemory
from steerlab.evaluate.scoring import PLAIN, Setting, generate_texts
from steerlab.evaluate.sft import SftConfig, TrainedModel
from steerlab.evaluate.tasks import Scores, Task
from steerlab.evaluate.windows import adopt_window, extract_per_window
from steerlab.extraction import extract
from steerlab.kit import Kit, Positions
from steerlab.methods import method_names
from steerlab.models import LoadedModel
from steerlab.vector import Vector


@dataclass
class RunOptions:
    n_windows: int = 4
    scales: tuple[float, ...] = DEFAULT_SCALES
    sweep: tuple[float, ...] = DEFAULT_SCALES  # magnitudes; each is run with both signs
    # Relative doses (calibrate's module docstring): when set they replace `scales` / `sweep`, converted per window.
    doses: tuple[float, ...] | None = None
    sweep_doses: tuple[float, ...] | None = None
    budget: float = DEFAULT_BUDGET
    repetition_budget: float = DEFAULT_REPETITION_BUDGET
    fluency_margin: float = DEFAULT_FLUENCY_MARGIN  # standard errors the log-prob check keeps in hand (calibrate)
    n_fluency: int = 8
    gen_tokens: int = 24
    k_shots: int = 4
    lora: LoraConfig = field(default_factory=LoraConfig)
    # None: LoRA's schedule (epochs cap, patience, batch, seed) at full fine-tuning's own learning rate.
    finetune: FinetuneConfig | None = None
    latency_rounds: int = 3
    conditions: tuple[str, ...] = CONDITIONS
    extract_batch: int = 8
    # Steering methods, each its own condition and calibration; the first is the legacy `steering` condition.
    methods: tuple[str, ...] = ("mean_diff",)
    # The tokens every steering condition steers. "generated": the answer's tokens, not the prompt's, as CAA adds its
    # vectors after the instruction and as the trained methods are trained; A/B answers are scored the same way.
    positions: Positions = "generated"
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. {"preference": {"epochs": 1}}
    log: Callable[[str], None] | None = None  # progress lines (stage and seconds); None = quiet


@dataclass
class TaskSpec:
    """One axis of the bench: a task and its disjoint train / validation / test items."""

    name: str
    task: Task
    train: Sequence[Any]
    val: Sequence[Any]
    test: Sequence[Any]
    goal: int = 1
    instruction: str | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)
    held: Sequence[Any] = ()  # train-kind items the vector never saw, for held-out pairs (default: validation)


@dataclass
class MethodRun:
    """One steering method on one task: its vector (from the train split), calibrated on validation."""

    method: str
    condition: str
    vector: Vector
    calibration: Calibration
    extract_s: float
    extract_memory: dict[str, float] = field(default_factory=dict)

    @property
    def effect(self) -> float:
        """The calibrated candidate's goal-signed validation effect (NaN when the grid lacks it)."""
        cal = self.calibration
        chosen = (p.effect for p in cal.grid if p.layers == cal.layers and p.scale == cal.scale)
        return next(chosen, math.nan)


@dataclass
class TaskResult:
    name: str
    rows: list[dict[str, Any]]
    calibration: Calibration  # the first method's (the `steering` condition)
    costs: dict[str, Any]
    info: dict[str, Any]
    vector: Vector
    methods: list[MethodRun] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        cal = self.calibration.as_dict()
        doc = {
            "rows": self.rows,
            "calibration": {"layers": cal["layers"], "scale": cal["scale"], **cal},
            "costs": self.costs,
            "info": self.info,
        }
        if len(self.methods) > 1:  # single-method runs keep the legacy shape
            doc["calibration_by_method"] = {
                m.method: {"condition": m.condition, **m.calibration.as_dict()} for m in self.methods
            }
        return doc


def check_methods(methods: Sequence[str]) -> None:
    """Known, distinct method names, at least one; else a SteerlabError that lists the registry."""
    known = method_names()
    unknown = [m for m in methods if m not in known]
    if unknown or not methods or len(set(methods)) != len(methods):
        problem = f"unknown steering methods {unknown}" if unknown else f"methods {list(methods)} must be distinct"
        raise SteerlabError(f"{problem}: give one or more of {', '.join(known)}, comma-separated.")


def check_conditions(text: str) -> tuple[str, ...]:
    """Conditions from a comma-separated list, in the bench's order; a SteerlabError names unknown ones and says
    that unsteered, which every other condition is compared with, must be among them."""
    wanted = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in CONDITIONS]
    if unknown:
        raise SteerlabError(f"unknown conditions {unknown}: give one or more of {', '.join(CONDITIONS)}.")
    if "unsteered" not in wanted:
        raise SteerlabError("the conditions must include unsteered: every other condition is compared with it.")
    return tuple(c for c in CONDITIONS if c in wanted)


def best_method(runs: Sequence[MethodRun]) -> MethodRun:
    """The method steering+prompting uses: the largest in-budget calibrated effect; the first when none fits."""
    fitting = [r for r in runs if r.calibration.within_budget and not math.isnan(r.effect)]
    return max(fitting, key=lambda r: r.effect) if fitting else runs[0]


def _key(item: Any) -> str:
    return repr(item)


def check_disjoint(spec: TaskSpec) -> None:
    """Extraction (train), validation and test never share an item; ad-hoc files are checked here too."""
    train = {_key(i) for i in spec.train}
    val = {_key(i) for i in spec.val}
    if train & {_key(i) for i in spec.held}:
        raise SteerlabError(f"{spec.name}: held-out items overlap the training items.")
    test = {_key(i) for i in spec.test}
    for a, b, names in ((train, val, "train/validation"), (train, test, "train/test"), (val, test, "validation/test")):
        if a & b:
            raise SteerlabError(f"{spec.name}: {len(a & b)} items are in both {names}; the splits must not overlap.")
    if not spec.train or not spec.val or not spec.test:
        sizes = (len(spec.train), len(spec.val), len(spec.test))
        raise SteerlabError(f"{spec.name}: train/validation/test sizes are {sizes}; each needs at least one item.")


def _log(opts: RunOptions, message: str) -> None:
    if opts.log is not None:
        opts.log(message)


def _timed(fn: Any, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def _evaluate(base: LoadedModel, spec: TaskSpec, setting: Setting, opts: RunOptions) -> Scores:
    scores = spec.task.evaluate(base, setting, spec.test)
    if not spec.task.generates:
        prompts = spec.task.fluency_prompts(spec.test)[: opts.n_fluency]
        texts = generate_texts(base, setting, prompts, opts.gen_tokens)
        scores.update(fluency_scores(base, prompts, texts))
    return scores


def _latency(base: LoadedModel, spec: TaskSpec, steered: Setting, opts: RunOptions) -> dict[str, Any]:
    """Interleaved timing of the same generation unsteered and steered; medians over rounds."""
    prompts = spec.task.fluency_prompts(spec.test)[: max(1, min(4, opts.n_fluency))]
    plain, steer = [], []
    for _ in range(opts.latency_rounds):
        plain.append(_timed(generate_texts, base, PLAIN, prompts, opts.gen_tokens)[1])
        steer.append(_timed(generate_texts, base, steered, prompts, opts.gen_tokens)[1])
    if not plain:
        return {}
    p, s = statistics.median(plain), statistics.median(steer)
    return {"unsteered_s": p, "steered_s": s, "overhead_pct": 100 * (s - p) / p, "rounds": opts.latency_rounds}


def run_task(base: LoadedModel, spec: TaskSpec, opts: RunOptions, out_dir: Path | None = None) -> TaskResult:
    check_disjoint(spec)
    check_methods(opts.methods)
    started = time.perf_counter()
    windows = layer_windows(base.n_layers, opts.n_windows)
    runs = [_extract_and_calibrate(base, spec, opts, windows, m, i == 0) for i, m in enumerate(opts.methods)]
    vector, cal = runs[0].vector, runs[0].calibration
    costs = _method_costs(runs)
    trained = _train_baselines(base, spec, opts, costs)
    best = best_method(runs)
    settings, skipped = build_conditions(
        spec.task,
        spec.train,
        spec.goal,
        vector,
        cal.layers,
        cal.scale,
        spec.instruction,
        opts.k_shots,
        trained,
        opts.conditions,
        others=[(r.condition, _kit(r)) for r in runs[1:]],
        prompting_kit=_kit(best),
    )
    rows, by_condition = _evaluate_conditions(base, spec, opts, settings, costs)
    # The sweep and the latency are measured for the best method (the one steering+prompting uses).
    rows += _sweep(base, spec, opts, best, by_condition)
    steered = next((s for s in settings if s.name == best.condition), None)
    if steered is not None and opts.latency_rounds > 0:
        costs["latency"] = {**_latency(base, spec, steered, opts), "method": best.method}
    costs["total_s"] = time.perf_counter() - started
    info = _info(spec, len(spec.task.extraction_pairs(spec.train)), windows, skipped)
    info.update(methods=list(opts.methods), prompting_method=best.method, sweep_method=best.method)
    result = TaskResult(spec.name, rows, cal, costs, info, vector, runs)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for r in runs:  # the first method's vector keeps the legacy file name
            r.vector.save(out_dir / ("vector.safetensors" if r is runs[0] else f"vector_{r.method}.safetensors"))
    return result


def _kit(run: MethodRun) -> Kit:
    return steering_kit(run.vector, run.calibration.scale, run.calibration.layers)


def _method_costs(runs: Sequence[MethodRun]) -> dict[str, Any]:
    """The first method's costs under the legacy keys; every method's under `by_method` when there are several.

    `training` holds every method's training cost by condition, steering and fine-tuning alike: seconds (for a
    steering method, its extraction or training, calibration excluded) and peak memory (`memory_measure`).
    """
    first = runs[0]
    costs: dict[str, Any] = {"extract_s": first.extract_s, "calibrate_s": first.calibration.seconds, "eval_s": {}}
    costs.update(extract_memory=first.extract_memory, memory_measure=MEASURE)
    costs["training"] = {r.condition: {"method": r.method, "seconds": r.extract_s, **r.extract_memory} for r in runs}
    if len(runs) > 1:
        costs["by_method"] = {
            r.method: {"extract_s": r.extract_s, "calibrate_s": r.calibration.seconds, **r.extract_memory} for r in runs
        }
    return costs


def _extract_and_calibrate(
    base: LoadedModel, spec: TaskSpec, opts: RunOptions, windows: list[list[int]], method: str, first: bool
) -> MethodRun:
    """The method's vector from the train split, calibrated on validation; its card records the choice."""
    pairs = spec.task.extraction_pairs(spec.train)
    options = opts.method_options.get(method, {})

    def one(layers: Sequence[int]) -> Vector:
        return extract(
            base,
            pairs,
            layers=list(layers),
            method=method,
            batch_size=opts.extract_batch,
            progress=False,
            name=spec.name,
            **options,
        )

    with PeakMemory() as peak:
        vector, extract_s = _timed(lambda: extract_per_window(one, method, windows))
    cal = calibrate(
        base,
        spec.task,
        vector,
        spec.val,
        spec.goal,
        windows,
        opts.scales,
        opts.budget,
        opts.n_fluency,
        opts.gen_tokens,
        opts.repetition_budget,
        opts.doses,
        opts.positions,
        opts.fluency_margin,
    )
    _log(
        opts,
        f"{spec.name}: {method} from {len(pairs)} pairs in {extract_s:.1f} s; calibrated in {cal.seconds:.1f} s",
    )
    write_to_card(adopt_window(vector, cal.layers), cal, spec.name)
    vector.card.description = f"steerlab bench: {spec.name} ({spec.task.kind}), goal {spec.goal:+d}, {method}"
    return MethodRun(method, method_condition(method, first), vector, cal, extract_s, peak.as_dict())


def _finetune_config(opts: RunOptions) -> FinetuneConfig:
    """Full fine-tuning's config: the given one, else LoRA's schedule (the same early stopping) at its own lr."""
    if opts.finetune is not None:
        return opts.finetune
    schedule = {f.name: getattr(opts.lora, f.name) for f in fields(SftConfig) if f.name != "lr"}
    return FinetuneConfig(**schedule)


def sft_validation(spec: TaskSpec) -> list[Any]:
    """The fine-tunes' early-stopping examples: those of the held-out train-kind items, else of the validation
    items (generation tasks' validation items are prompts, not examples); empty = hold out part of the train split."""
    items = spec.held or (() if spec.task.generates else spec.val)
    return list(spec.task.sft_examples(items, spec.goal)) if items else []


def _train_baselines(
    base: LoadedModel, spec: TaskSpec, opts: RunOptions, costs: dict[str, Any]
) -> dict[str, LoadedModel | str]:
    """Each fine-tuned baseline the conditions ask for: condition -> its model, or why it was not trained (a
    refusal, such as full fine-tuning's size limit, becomes the condition's `skipped` note)."""
    examples = spec.task.sft_examples(spec.train, spec.goal)
    val = sft_validation(spec)

    def log(name: str) -> Callable[[str], None] | None:
        return None if opts.log is None else lambda line: _log(opts, f"{spec.name}: {name} {line}")

    trainers = {
        "lora": lambda: train_lora(base, examples, opts.lora, val, log("lora")),
        "finetune": lambda: train_finetune(base, examples, _finetune_config(opts), val, log("finetune")),
    }
    trained: dict[str, LoadedModel | str] = {}
    for name, train in trainers.items():
        if name not in opts.conditions:
            continue
        if not examples:
            trained[name] = "the task gives no training examples to fine-tune on"
            continue
        try:
            with PeakMemory() as peak:
                result: TrainedModel = train()
        except SteerlabError as exc:  # e.g. full fine-tuning refuses models above its size limit
            trained[name] = str(exc)
            continue
        trained[name] = result.model
        _record_training(costs, name, result, peak)
        curve = result.curve
        _log(
            opts,
            f"{spec.name}: {name} trained on {result.n_examples} examples in {result.train_seconds:.1f} s; "
            f"best epoch {curve.best_epoch} of {len(curve.train)} (validation loss {curve.val[0]:.3f} -> "
            f"{curve.val[curve.best_epoch]:.3f})",
        )
    return trained


def _record_training(costs: dict[str, Any], name: str, result: TrainedModel, peak: PeakMemory) -> None:
    """`<name>_train_s`, `_examples`, `_loss` (every step) and `_curve` (the epochs), and a `training` row."""
    costs.update(
        {
            f"{name}_train_s": result.train_seconds,
            f"{name}_examples": result.n_examples,
            f"{name}_loss": result.losses,
            f"{name}_curve": result.curve.as_dict(),
        }
    )
    costs["training"][name] = {"method": name, "seconds": result.train_seconds, **peak.as_dict()}


def _evaluate_conditions(
    base: LoadedModel, spec: TaskSpec, opts: RunOptions, settings: Sequence[Setting], costs: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Scores]]:
    rows: list[dict[str, Any]] = []
    by_condition: dict[str, Scores] = {}
    for setting in settings:
        scores, seconds = _timed(_evaluate, base, spec, setting, opts)
        by_condition[setting.name] = scores
        costs["eval_s"][setting.name] = seconds
        _log(opts, f"{spec.name}: {setting.name} evaluated in {seconds:.1f} s")
        rows += [stats.row(spec.name, setting.name, metric, values) for metric, values in scores.items()]
    return rows + _paired_rows(spec, by_condition), by_condition


def _paired_rows(spec: TaskSpec, by_condition: dict[str, Scores]) -> list[dict[str, Any]]:
    """Each condition's per-item difference from unsteered on the primary metric, with a paired CI."""
    base = by_condition.get("unsteered")
    metric = spec.task.metric
    if base is None or metric not in base:
        return []
    return [
        stats.paired_diff_row(spec.name, name, metric, scores[metric], base[metric])
        for name, scores in by_condition.items()
        if name != "unsteered" and metric in scores
    ]


def _info(spec: TaskSpec, n_pairs: int, windows: list[list[int]], skipped: list[str]) -> dict[str, Any]:
    return {
        "task": spec.task.kind,
        "goal": spec.goal,
        "metric": spec.task.metric,
        "instruction": spec.instruction,
        "source": spec.source,
        "n_train": len(spec.train),
        "n_val": len(spec.val),
        "n_test": len(spec.test),
        "n_pairs": n_pairs,
        "windows": windows,
        "notes": spec.notes + skipped,
    }


def _sweep(
    base: LoadedModel, spec: TaskSpec, opts: RunOptions, run: MethodRun, done: dict[str, Scores]
) -> list[dict[str, Any]]:
    """The primary metric (and fluency) at each sweep scale (or dose), both signs, at the method's calibrated layers."""
    rows = []
    vector, cal = run.vector, run.calibration
    magnitudes = opts.sweep
    if opts.sweep_doses:
        magnitudes = tuple(scale_for_dose(vector, cal.residual_norms, cal.layers, d) for d in opts.sweep_doses)
    for scale in sorted({sign * m for m in magnitudes for sign in (-1, 1)}):
        if math.isclose(scale, cal.scale) and run.condition in done:
            scores = done[run.condition]
        else:
            setting = Setting(sweep_name(scale), steering=steering_kit(vector, scale, cal.layers))
            scores = _evaluate(base, spec, setting, opts)
        for metric in (spec.task.metric, "fluency_logprob", "repetition"):
            rows.append(stats.row(spec.name, sweep_name(scale), metric, scores[metric]))
    return rows
