"""method="preference": a steering vector trained with BiPO's bi-directional preference objective on a frozen model.

BiPO (Cao et al. 2024, "Personalized Steering of LLMs via Bi-directional Preference Optimization"): with +v the model
should prefer the positive completion over the negative one, with -v the reverse. Per pair, with logp_0 the unsteered
log-prob (computed once) and m(v) = [logp_v(pos) - logp_0(pos)] - [logp_v(neg) - logp_0(neg)],

    loss = -log sigmoid(beta * m(+v)) - log sigmoid(-beta * m(-v))      (averaged over pairs and both signs)

RePS (the reference-free variant in AxBench) drops logp_0; BiPO keeps it because the reference removes the pair's
own bias (an A/B question the model already answers "A" to) from the gradient, at the cost of one inference pass.

Size: the direction is trained on a sphere. v_l = c_l * w_l / |w_l|, with c_l = dose / n_layers * h_l and h_l the
mean residual norm at block l (tokens after the first, whose attention-sink norm is unrepresentative). The relative
dose |v_l| / h_l summed over the trained layers is `dose`, so the vector's total push at the last steered block stays
near `dose` times the residual norm however many layers are trained; scale 1 is the dose it was trained at. Without
the constraint the objective is won by growing |v| until the model stops being fluent.

Steering during training goes through steerlab.steer, the same hooks as inference: the plan compiler keeps the
autograd graph of a direction that requires grad (it only moves, scales and stacks it).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from steerlab.errors import SteerlabError
from steerlab.methods import register_trainer
from steerlab.models import LoadedModel
from steerlab.pair_scoring import ScoringBatch, check_preference_pairs, pair_logps, prepare, tokenize_pairs
from steerlab.pairs import PairSet, ReadPosition
from steerlab.preference_anchor import Anchor, anchor_kl, build_anchor
from steerlab.residual_norms import measure_residual_norms
from steerlab.steering import steer
from steerlab.vector import Vector

Directions = dict[int, torch.Tensor]


@dataclass(frozen=True)
class PreferenceConfig:
    """Training settings; every one can be passed to extract(..., method="preference", name=value)."""

    beta: float = 0.1  # DPO's customary temperature: margins of a few nats stay in sigmoid's sloped part
    dose: float = 0.5  # total relative dose over the trained layers (coherence is reported to collapse near 1.9)
    # Measured on CAA corrigibility (64 pairs, SmolLM2-135M): 4 epochs at lr 0.005 stopped with the held-out loss
    # still falling (0.70 -> 0.59 in 28 steps); 20 epochs at 0.01 find their best step after 100-120 steps.
    lr: float = 0.01  # Adam on unit-norm directions
    epochs: int = 20  # most passes over the training pairs; early stopping usually ends it first
    pairs_per_step: int = 8
    eval_every: int = 10  # steps between held-out evaluations
    patience: int = 3  # evaluations without improvement before stopping
    held_out: float = 0.2  # fraction of pairs held out for early stopping (a seeded split)
    # The fluency anchor (preference_anchor.py): weight of KL(unsteered || steered) per token on the unsteered model's
    # own continuations of `anchor_prompts` of the pairs' prompts, `anchor_tokens` long. 0 turns it off. Measured on
    # CAA corrigibility (window 10-14, 50 test questions, fluency judged on 32 generations; the bench's tuning axis):
    # 4 prompts at weight 0.5 gave +0.113 P(matching) at relative dose 0.35 with fluency out of budget (-0.771
    # against -0.665 unsteered); 16 prompts gave +0.122 within it (-0.697), at twice the training time. Weight 2.0
    # kept fluency at the full dose but left a third of the effect; 1.0 trained at dose 1.0 learnt nothing (+0.02).
    fluency_weight: float = 0.5
    anchor_prompts: int = 16
    anchor_tokens: int = 16

    def __post_init__(self) -> None:
        if not (0 < self.held_out < 1) or self.dose <= 0 or self.lr <= 0 or self.beta <= 0:
            raise SteerlabError("preference training needs 0 < held_out < 1 and positive dose, lr and beta.")
        if self.fluency_weight < 0 or min(self.anchor_prompts, self.anchor_tokens) < 1:
            raise SteerlabError("preference training needs fluency_weight >= 0, anchor_prompts and anchor_tokens >= 1.")
        if min(self.epochs, self.pairs_per_step, self.eval_every, self.patience) < 1:
            raise SteerlabError("preference training needs epochs, pairs_per_step, eval_every and patience >= 1.")


@dataclass
class _Split:
    """Fixed batches (each holds its prompts' KV cache) and their unsteered completion log-probs, [B, 2] each."""

    batches: list[ScoringBatch]
    references: list[torch.Tensor]
    anchor: Anchor | None = None  # the fluency anchor, shared by the train and held-out splits

    @property
    def n_pairs(self) -> int:
        return sum(len(b) for b in self.batches)


@dataclass
class _Eval:
    step: int
    train_loss: float | None
    held_out_loss: float
    held_out_accuracy: float
    held_out_accuracy_negative: float
    anchor_kl: float = math.nan  # the fluency anchor's KL(unsteered || steered) per token, at +v and -v

    def row(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in dataclasses.asdict(self).items()}


@dataclass
class _Run:
    best: _Eval
    best_w: Directions
    history: list[_Eval] = field(default_factory=list)
    steps: int = 0
    stopped_early: bool = False


def bipo_loss(
    model: LoadedModel,
    directions: Directions,
    batch: ScoringBatch,
    reference: torch.Tensor,
    beta: float,
    anchor: Anchor | None = None,
    weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean BiPO loss over `batch` and both signs, and the [2, B] margins m(+v), m(-v), through steerlab.steer.

    With an `anchor` and a positive `weight`, plus weight x the anchor's KL(unsteered || steered), averaged over signs.
    """
    vector = Vector(directions)
    margins, kl = [], torch.zeros((), device=reference.device, dtype=reference.dtype)
    for sign in (1.0, -1.0):
        with steer(model, vector, scale=sign, positions="all"):
            shift = pair_logps(model, batch) - reference
            if anchor is not None and weight > 0:
                kl = kl + anchor_kl(model, anchor) / 2
        margins.append(shift[:, 0] - shift[:, 1])
    margin = torch.stack(margins)
    signs = torch.tensor([[1.0], [-1.0]], device=margin.device, dtype=margin.dtype)
    return -torch.nn.functional.logsigmoid(signs * beta * margin).mean() + weight * kl, margin


@contextmanager
def frozen(model: LoadedModel) -> Iterator[None]:
    """No parameter of the model records a gradient inside the block; the flags are restored after."""
    params = list(model.hf_model.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


@torch.no_grad()
def _split(model: LoadedModel, pairs: PairSet, order: Sequence[int], size: int, chat: bool) -> _Split:
    tokenized = tokenize_pairs(model, pairs, chat)
    batches = [prepare(model, [tokenized[i] for i in chunk]) for chunk in _chunks(order, size)]
    return _Split(batches, [pair_logps(model, b) for b in batches])


def _directions(w: Directions, norms: dict[int, float]) -> Directions:
    return {layer: norms[layer] * t / t.norm().clamp_min(1e-12) for layer, t in w.items()}


@torch.no_grad()
def _evaluate(
    model: LoadedModel, w: Directions, norms: dict[int, float], split: _Split, cfg: PreferenceConfig
) -> tuple[float, float, float, float]:
    """Held-out loss (with the anchor's weighted KL), the fractions of pairs where +v raises (and -v lowers) the
    margin over unsteered, and the anchor's KL (NaN without one)."""
    losses, plus, minus = [], [], []
    directions = _directions(w, norms)
    for batch, reference in zip(split.batches, split.references, strict=True):
        loss, margin = bipo_loss(model, directions, batch, reference, cfg.beta)
        losses.append(float(loss) * len(batch))
        plus += (margin[0] > 0).tolist()
        minus += (margin[1] < 0).tolist()
    n = split.n_pairs
    kl = _anchor_kl(model, directions, split.anchor)
    penalty = cfg.fluency_weight * kl if split.anchor is not None else 0.0
    return sum(losses) / n + penalty, sum(plus) / n, sum(minus) / n, kl


def _anchor_kl(model: LoadedModel, directions: Directions, anchor: Anchor | None) -> float:
    if anchor is None:
        return math.nan
    total = 0.0
    for sign in (1.0, -1.0):
        with steer(model, Vector(directions), scale=sign, positions="all"):
            total += float(anchor_kl(model, anchor)) / 2
    return total


def _train(
    model: LoadedModel,
    w: Directions,
    norms: dict[int, float],
    train: _Split,
    held: _Split,
    cfg: PreferenceConfig,
    seed: int,
    progress: bool,
) -> _Run:
    first = _Eval(0, math.nan, *_evaluate(model, w, norms, held, cfg))
    run = _Run(best=first, best_w={k: t.detach().clone() for k, t in w.items()}, history=[first])
    params = [t.requires_grad_(True) for t in w.values()]
    optimiser = torch.optim.Adam(params, lr=cfg.lr)
    order = random.Random(seed)
    bar = tqdm(total=cfg.epochs * len(train.batches), desc="preference", disable=not progress, leave=False)
    window: list[float] = []
    bad = 0
    with bar:
        for _ in range(cfg.epochs):
            # The batches keep their pairs (each caches its prompts); the order they come in is reshuffled.
            indices = list(range(len(train.batches)))
            order.shuffle(indices)
            for i in indices:
                optimiser.zero_grad()
                directions = _directions(w, norms)
                loss, _ = bipo_loss(
                    model, directions, train.batches[i], train.references[i], cfg.beta, train.anchor, cfg.fluency_weight
                )
                loss.backward()
                optimiser.step()
                run.steps += 1
                window.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{window[-1]:.4f}", held=f"{run.best.held_out_loss:.4f}")
                if run.steps % cfg.eval_every:
                    continue
                bad = _record(model, w, norms, held, cfg, run, window, bad)
                window = []
                if bad >= cfg.patience:
                    run.stopped_early = True
                    return run
        if window:
            _record(model, w, norms, held, cfg, run, window, bad)
    return run


def _record(
    model: LoadedModel,
    w: Directions,
    norms: dict[int, float],
    held: _Split,
    cfg: PreferenceConfig,
    run: _Run,
    window: list[float],
    bad: int,
) -> int:
    """Evaluate on the held-out pairs; keep the direction if it is the best so far. Returns the new patience count."""
    result = _Eval(run.steps, sum(window) / len(window), *_evaluate(model, w, norms, held, cfg))
    run.history.append(result)
    if result.held_out_loss < run.best.held_out_loss - 1e-6:
        run.best, run.best_w = result, {k: t.detach().clone() for k, t in w.items()}
        return 0
    return bad + 1


def _config(options: dict[str, Any]) -> PreferenceConfig:
    try:
        return PreferenceConfig(**options)
    except TypeError as exc:
        known = ", ".join(f.name for f in dataclasses.fields(PreferenceConfig))
        raise SteerlabError(f"unknown option for method 'preference' ({exc}); it takes: {known}, seed.") from exc


def _settings(options: dict[str, Any]) -> dict[str, Any]:
    return dataclasses.asdict(_config(options))


@register_trainer("preference", settings=_settings)
def train_preference(
    model: LoadedModel,
    pairs: PairSet,
    layers: Sequence[int] | None = None,
    position: ReadPosition | None = None,
    batch_size: int = 16,
    chat: bool = True,
    progress: bool = True,
    name: str = "",
    seed: int = 0,
    validation: PairSet | None = None,
    **options: Any,
) -> Vector:
    """Train one direction per layer (the mean-diff card's recommended layers, or `layers`) with BiPO.

    `validation` replaces the seeded held-out split; `options` are PreferenceConfig fields.
    """
    from steerlab.extraction import extract  # extraction dispatches here, so import it late

    cfg = _config(options)
    check_preference_pairs(pairs)
    if validation is None and len(pairs) < 2:
        raise SteerlabError("method 'preference' needs at least 2 pairs: some to train on, some held out.")
    train_set, held_set = (pairs, validation) if validation is not None else pairs.split(1 - cfg.held_out, seed)
    init = extract(model, train_set, layers, "mean_diff", position, batch_size, chat=chat, progress=progress)
    chosen = sorted(layers) if layers is not None else init.card.recommended_layers
    with frozen(model):
        # One unsteered pass over every prompt: the caches, the reference log-probs and the residual norms.
        with measure_residual_norms(model, chosen) as meter:
            shuffled = list(range(len(train_set)))
            random.Random(seed).shuffle(shuffled)
            train = _split(model, train_set, shuffled, cfg.pairs_per_step, chat)
        held = _split(model, held_set, range(len(held_set)), max(1, batch_size // 2), chat)
        if cfg.fluency_weight > 0:
            train.anchor = held.anchor = build_anchor(model, train_set, cfg.anchor_prompts, cfg.anchor_tokens, chat)
        h = meter.means()
        norms = {layer: cfg.dose / len(chosen) * h[layer] for layer in chosen}
        w = {la: _unit(init.directions[la]).to(device=model.device, dtype=model.dtype) for la in chosen}
        run = _train(model, w, norms, train, held, cfg, seed, progress)
    vector = Vector({k: t.float().cpu() for k, t in _directions(run.best_w, norms).items()}, init.card)
    _write_card(vector, init, pairs, cfg, seed, run, h, train.n_pairs, held.n_pairs, name)
    return vector


def _unit(t: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(t).all() or float(t.norm()) == 0.0:
        raise SteerlabError("the mean-diff start direction is zero or not finite; the two sides do not differ.")
    return t / t.norm()


def _write_card(
    vector: Vector,
    init: Vector,
    pairs: PairSet,
    cfg: PreferenceConfig,
    seed: int,
    run: _Run,
    h: dict[int, float],
    n_train: int,
    n_held: int,
    name: str,
) -> None:
    layers = vector.layers
    # The mean-diff diagnostics describe how separable each trained layer is; their norm is the trained one's.
    norms = vector.norms()
    diagnostics = {la: {**init.card.diagnostics.get(la, {}), "norm": norms[la]} for la in layers}
    training = {
        "objective": "bipo",
        "beta": cfg.beta,
        "dose": cfg.dose,
        "lr": cfg.lr,
        "fluency_weight": cfg.fluency_weight,
        "anchor_kl": run.best.row()["anchor_kl"],
        "init_anchor_kl": run.history[0].row()["anchor_kl"],
        "pairs_per_step": cfg.pairs_per_step,
        "seed": seed,
        "layers": layers,
        "steps": run.steps,
        "best_step": run.best.step,
        "stopped_early": run.stopped_early,
        "train_loss": run.best.row()["train_loss"],
        "held_out_loss": run.best.held_out_loss,
        "held_out_accuracy": run.best.held_out_accuracy,
        "held_out_accuracy_negative": run.best.held_out_accuracy_negative,
        "init": "mean_diff",
        "init_held_out_loss": run.history[0].held_out_loss,
        "init_held_out_accuracy": run.history[0].held_out_accuracy,
        "n_train": n_train,
        "n_held_out": n_held,
        "residual_norms": {str(la): h[la] for la in layers},
        "history": [e.row() for e in run.history],
    }
    card = vector.card
    vector.card = dataclasses.replace(
        card,
        method="preference",
        n_pairs=len(pairs),
        dataset_hash=pairs.content_hash(),
        norms=norms,
        diagnostics=diagnostics,
        recommended_layers=layers,
        recommended_scale=1.0,
        name=name,
        metadata={**card.metadata, "training": training},
    )
