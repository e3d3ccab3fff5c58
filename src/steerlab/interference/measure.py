"""Interference between a kit's axes: their geometry, their measured cross-effects, and how many fit together.

Geometry (steerlab.kit_geometry): the cosine of every pair of directions at each layer both entries steer, before and
after Gram-Schmidt.

Measure of axis j: generate from held-out prompts under some steering, then run prompt + generation through the
UNSTEERED model and project the block-L_j outputs over the generated tokens on axis j's unit direction. L_j is the
layer (among those the entry steers) where the axis's held-out pairs separate best, and shifts are reported in units
of that held-out gap (mean positive projection minus mean negative). Reading unsteered activations of the generated
text measures what the text expresses, not the vector that was added. The same forward pass gives fluency: the mean
log-probability of the generated tokens under the unsteered model.

Max axes: the largest set of axes applied together in which every axis keeps >= `keep_fraction` of its solo effect and
fluency stays within `fluency_tolerance` of the unsteered generations'.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from steerlab.capture import pad_batch, pad_id_of, read_batches, tokenize_side
from steerlab.errors import SteerlabError
from steerlab.generation import encode_prompts
from steerlab.kit import Kit, KitEntry
from steerlab.kit_geometry import cosine_by_layer, cosine_matrix, orthogonalize_kit
from steerlab.kitfile import entry_names
from steerlab.models import LoadedModel
from steerlab.pairs import PairSet
from steerlab.steering import steer
from steerlab.vector import Vector

if TYPE_CHECKING:
    from steerlab.evaluate.cross_effects import AxisTask, TaskCrossEffects

Config = tuple[int, ...]  # indices of the axes steered together; () is the unsteered model


# ----- held-out calibration -----
@dataclass
class HeldOut:
    """How axis j's held-out pairs separate on its direction at its reading layer."""

    read_layer: int
    accuracy: float
    paired_accuracy: float
    separation: float
    gap: float
    n_pairs: int
    overlaps_training: bool = False


def _unit(vector: Vector, layer: int) -> torch.Tensor:
    direction = vector.directions[layer].float()
    return direction / direction.norm().clamp_min(1e-12)


def calibrate(model: LoadedModel, entry: KitEntry, pairs: PairSet, batch_size: int = 16) -> HeldOut:
    """Project held-out pairs on the entry's direction at each layer it steers; keep the best-separating layer."""
    position = pairs.default_position
    items = []
    for pair in pairs.pairs:
        items += [tokenize_side(model, pair.positive, position), tokenize_side(model, pair.negative, position)]
    layers = entry.active_layers()
    acts: dict[int, torch.Tensor] = {la: torch.zeros(len(items), model.hidden_size) for la in layers}
    for chunk, batch in read_batches(model, items, layers, batch_size):
        for la in layers:
            acts[la][chunk] = batch[la].cpu()
    best: HeldOut | None = None
    for la in layers:
        proj = acts[la] @ _unit(entry.vector, la)
        pos, neg = proj[0::2], proj[1::2]
        gap = float(pos.mean() - neg.mean())
        pooled = float(torch.cat([pos - pos.mean(), neg - neg.mean()]).std().clamp_min(1e-6))
        threshold = float(pos.mean() + neg.mean()) / 2
        accuracy = float(((pos > threshold).float().sum() + (neg <= threshold).float().sum()) / len(items))
        found = HeldOut(la, accuracy, float((pos > neg).float().mean()), gap / pooled, gap, len(pairs))
        if best is None or found.separation > best.separation:
            best = found
    assert best is not None  # an entry always steers at least one layer
    best.overlaps_training = bool(entry.vector.card.dataset_hash) and pairs.content_hash() == (
        entry.vector.card.dataset_hash
    )
    return best


# ----- generation and scoring -----
@dataclass
class Measured:
    """One steering configuration: each axis's measure (mean projection) and the fluency of its generations."""

    measures: list[float]
    fluency: float
    n_tokens: int
    samples: list[str] = field(default_factory=list)


def _eos_ids(model: LoadedModel) -> set[int]:
    ids: set[int] = set()
    for source in (model.tokenizer, getattr(model.hf_model, "generation_config", None)):
        value = getattr(source, "eos_token_id", None)
        ids.update([value] if isinstance(value, int) else list(value or []))
    return ids


@torch.inference_mode()
def _generate_rows(
    model: LoadedModel, prompts: list[str], steering: list[Kit | None], max_new_tokens: int
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, generated ids up to the first end token) per row, each row under its own steering."""
    ids, mask, _ = encode_prompts(model, prompts)
    pad = pad_id_of(model.tokenizer)
    kwargs: dict[str, Any] = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    context = steer(model, steering) if any(s is not None for s in steering) else nullcontext()
    hf: Any = model.hf_model  # typed as nn.Module; generate() comes from transformers' GenerationMixin
    with context:
        out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, pad_token_id=pad, **kwargs)
    eos = _eos_ids(model)
    rows = []
    for r in range(len(prompts)):
        prompt = ids[r][mask[r].bool()].tolist()
        generated = out[r, ids.shape[1] :].tolist()
        cut = next((k for k, tok in enumerate(generated) if tok in eos), len(generated))
        rows.append((prompt, generated[:cut]))
    return rows


@torch.inference_mode()
def _score_rows(
    model: LoadedModel, rows: list[tuple[list[int], list[int]]], units: list[tuple[int, torch.Tensor]]
) -> list[tuple[list[float], float, int]]:
    """Per row: each axis's projection (mean over generated tokens), mean log-prob of those tokens, token count."""
    scored: list[tuple[list[float], float, int]] = [([math.nan] * len(units), math.nan, 0) for _ in rows]
    live = [r for r, (_, gen) in enumerate(rows) if gen]
    if not live:
        return scored
    seqs = [rows[r][0] + rows[r][1] for r in live]
    ids, mask, positions, _ = pad_batch(seqs, pad_id_of(model.tokenizer), "right", model.device)
    captured: dict[int, torch.Tensor] = {}
    handles = [model.layers[la].register_forward_hook(_reader(captured, la)) for la in sorted({la for la, _ in units})]
    try:
        logits = model.hf_model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
    finally:
        for handle in handles:
            handle.remove()
    for b, r in enumerate(live):
        start, gen = len(rows[r][0]), rows[r][1]
        span = slice(start, start + len(gen))
        logp = torch.log_softmax(logits[b, start - 1 : start - 1 + len(gen)].float(), dim=-1)
        fluency = float(logp.gather(-1, torch.tensor(gen, device=logp.device).unsqueeze(-1)).mean())
        measures = [float(captured[la][b, span].float().mean(0) @ unit.to(logp.device)) for la, unit in units]
        scored[r] = (measures, fluency, len(gen))
    return scored


def _reader(captured: dict[int, torch.Tensor], layer: int) -> Any:
    def hook(_module: torch.nn.Module, _args: Any, output: Any) -> None:
        captured[layer] = output[0] if isinstance(output, tuple) else output

    return hook


def _nanmean(values: Sequence[float]) -> float:
    real = [v for v in values if not math.isnan(v)]
    return sum(real) / len(real) if real else math.nan


# ----- the report -----
@dataclass
class Combo:
    axes: list[str]
    kept: dict[str, float]  # each axis's effect in the combination / its solo effect
    fluency: float
    fluency_ok: bool
    ok: bool


@dataclass
class InterferenceReport:
    names: list[str]
    scales: list[float]
    cosine: list[list[float]]
    cosine_by_layer: dict[str, dict[int, float]]
    cosine_orthogonalized: list[list[float]]
    held_out: dict[str, HeldOut]
    cross_effect: list[list[float]]  # [i][j]: steering axis i alone moves axis j's measure by this many gaps
    fluency_unsteered: float
    fluency_solo: dict[str, float]
    effective: list[str]
    combos: list[Combo]
    max_axes: int
    max_axes_set: list[str]
    search: str
    settings: dict[str, Any]
    prompts: list[str]
    samples: dict[str, list[str]] = field(default_factory=dict)
    task_effects: TaskCrossEffects | None = None  # cross-effects on each axis's bench task metric, when given

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(asdict(self))

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return target

    def save_png(self, path: str | os.PathLike[str]) -> Path:
        from steerlab.interfere_plot import save_heatmaps

        return save_heatmaps(self, Path(path))


def _json_safe(value: Any) -> Any:
    """NaN becomes null (JSON has no NaN); dict keys become strings."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


# ----- the measurement -----
@dataclass
class _Run:
    """Everything the search needs: the model, the axes, the prompts, and the configurations measured so far."""

    model: LoadedModel
    entries: list[KitEntry]
    prompts: list[str]
    units: list[tuple[int, torch.Tensor]]
    max_new_tokens: int
    batch_size: int
    results: dict[Config, Measured] = field(default_factory=dict)

    def measure(self, configs: Sequence[Config]) -> None:
        todo = [c for c in dict.fromkeys(configs) if c not in self.results]
        rows = [(c, p) for c in todo for p in self.prompts]
        outputs: list[tuple[list[int], list[int]]] = []
        scores: list[tuple[list[float], float, int]] = []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            steering = [Kit([self.entries[i] for i in c]) if c else None for c, _ in chunk]
            generated = _generate_rows(self.model, [p for _, p in chunk], steering, self.max_new_tokens)
            outputs += generated
            scores += _score_rows(self.model, generated, self.units)
        decode = self.model.tokenizer.decode
        for c in todo:
            mine = [k for k, (cfg, _) in enumerate(rows) if cfg == c]
            measures = [_nanmean([scores[k][0][j] for k in mine]) for j in range(len(self.units))]
            self.results[c] = Measured(
                measures=measures,
                fluency=_nanmean([scores[k][1] for k in mine]),
                n_tokens=sum(scores[k][2] for k in mine),
                samples=[decode(outputs[k][1], skip_special_tokens=True) for k in mine],
            )


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
    are used. `min_solo_effect`: an axis whose solo shift is below this many held-out gaps counts as inert and is
    left out of the max-axes search. `max_subsets`: above this many combinations the search turns greedy.
    `tasks`: a bench task with held-out items per axis (by name); when given, the cross-effects are also measured
    on each axis's task metric (steerlab.evaluate.cross_effects).
    """
    if len(kit.entries) < 2:
        raise SteerlabError("interference needs a kit of at least two entries.")
    labels = list(names) if names is not None else entry_names(kit)
    for label, entry in zip(labels, kit.entries, strict=True):
        try:
            entry.vector.check_compatible(model)
        except SteerlabError as exc:
            raise SteerlabError(f"axis {label}: {exc}") from exc
    if tasks:
        from steerlab.evaluate.cross_effects import check_axes

        check_axes(tasks, labels)  # before the long measurement, not after it
    pair_sets = _align_pairs(labels, pairs, max_pairs, seed)
    held = [calibrate(model, e, p, batch_size) for e, p in zip(kit.entries, pair_sets, strict=True)]
    units = [(h.read_layer, _unit(e.vector, h.read_layer)) for e, h in zip(kit.entries, held, strict=True)]
    chosen_prompts = list(prompts) if prompts else _prompts_from_pairs(pair_sets, prompts_per_axis)
    run = _Run(model, kit.entries, chosen_prompts, units, max_new_tokens, batch_size)
    n = len(kit.entries)
    run.measure([(), *[(i,) for i in range(n)]])
    base = run.results[()]
    shift = _shift_fn(run, base)
    cross = [[shift((i,), j) / _nonzero(held[j].gap) for j in range(n)] for i in range(n)]
    effective = [j for j in range(n) if abs(shift((j,), j)) >= min_solo_effect * abs(held[j].gap)]
    floor = base.fluency - fluency_tolerance * abs(base.fluency)
    search = _Search(run, shift, keep_fraction, floor, labels)
    best, method = search.max_axes(effective, max_subsets)
    ortho = orthogonalize_kit(kit)
    report = InterferenceReport(
        names=labels,
        scales=[float(e.scale) for e in kit.entries],
        cosine=cosine_matrix(kit),
        cosine_by_layer={
            f"{labels[i]}|{labels[j]}": cosine_by_layer(kit.entries[i], kit.entries[j])
            for i, j in itertools.combinations(range(n), 2)
        },
        cosine_orthogonalized=cosine_matrix(ortho),
        held_out=dict(zip(labels, held, strict=True)),
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
            "max_new_tokens": max_new_tokens,
            "max_pairs": max_pairs,
            "n_prompts": len(chosen_prompts),
            "model": model.name,
        },
        prompts=chosen_prompts,
        samples={_config_name(c, labels): m.samples for c, m in run.results.items()},
    )
    if tasks:
        from steerlab.evaluate.cross_effects import task_cross_effects

        report.task_effects = task_cross_effects(model, kit, tasks, labels)
    return report


def _nonzero(value: float) -> float:
    return value if abs(value) > 1e-9 else math.nan


def _config_name(config: Config, labels: list[str]) -> str:
    return "+".join(labels[i] for i in config) or "unsteered"


def _shift_fn(run: _Run, base: Measured) -> Any:
    def shift(config: Config, axis: int) -> float:
        return run.results[config].measures[axis] - base.measures[axis]

    return shift


@dataclass
class _Search:
    """Finds the largest set of effective axes that keep their solo effects and fluency together."""

    run: _Run
    shift: Any
    keep_fraction: float
    floor: float
    labels: list[str]
    combos: list[Combo] = field(default_factory=list)

    def judge(self, config: Config) -> Combo:
        measured = self.run.results[config]
        kept = {self.labels[j]: self.shift(config, j) / _nonzero(self.shift((j,), j)) for j in config}
        fluency_ok = not math.isnan(measured.fluency) and measured.fluency >= self.floor
        ok = fluency_ok and all(not math.isnan(k) and k >= self.keep_fraction for k in kept.values())
        combo = Combo([self.labels[j] for j in config], kept, measured.fluency, fluency_ok, ok)
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
            self.run.measure(level)
            passing = [(c, self.judge(c)) for c in level]
            good = [(c, combo) for c, combo in passing if combo.ok]
            if good:
                return max(good, key=lambda item: min(item[1].kept.values()))[0]
        return self._single(effective)

    def _greedy(self, effective: list[int]) -> Config:
        current = tuple(effective)
        while len(current) > 1:
            self.run.measure([current])
            combo = self.judge(current)
            if combo.ok:
                return current
            worst = min(current, key=lambda j: _finite(combo.kept[self.labels[j]]))
            if all(k >= self.keep_fraction for k in combo.kept.values()):
                # Effects survive but fluency does not: drop the axis that costs the most fluency alone.
                worst = min(current, key=lambda j: _finite(self.run.results[(j,)].fluency))
            current = tuple(j for j in current if j != worst)
        return self._single(list(current))


def _finite(value: float) -> float:
    return -math.inf if math.isnan(value) else value
