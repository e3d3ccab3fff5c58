"""extract(): contrastive pairs in, a Vector with per-layer diagnostics and a recommended layer range out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from steerlab.capture import read_batches
from steerlab.errors import SteerlabError
from steerlab.methods import LayerData, get_method, get_trainer
from steerlab.models import LoadedModel
from steerlab.pairs import PairSet, ReadPosition
from steerlab.prompts import tokenize_side
from steerlab.tokens import PaddingSide, Tokenized
from steerlab.vector import Card, Vector

MAX_HELD_OUT = 64  # held-out pairs kept for diagnostics; bounded so mean_diff memory does not grow with N
HELD_OUT_EVERY = 5  # every 5th pair is held out (20%)


@dataclass
class _Sums:
    """Running sums per layer: all pairs, and the training part used for diagnostics."""

    pos: dict[int, torch.Tensor] = field(default_factory=dict)
    neg: dict[int, torch.Tensor] = field(default_factory=dict)
    train_pos: dict[int, torch.Tensor] = field(default_factory=dict)
    train_neg: dict[int, torch.Tensor] = field(default_factory=dict)
    n_train: int = 0


def _accumulate(target: dict[int, torch.Tensor], layer: int, rows: torch.Tensor) -> None:
    total = rows.sum(0)
    target[layer] = target[layer] + total if layer in target else total


def held_out_indices(n_pairs: int) -> set[int]:
    # Fewer than 3 held-out pairs give no usable spread (separation divides by it): skip diagnostics below 15 pairs.
    if n_pairs < 3 * HELD_OUT_EVERY:
        return set()
    return set(list(range(HELD_OUT_EVERY - 1, n_pairs, HELD_OUT_EVERY))[:MAX_HELD_OUT]) or {n_pairs - 1}


def extract(
    model: LoadedModel,
    pairs: PairSet,
    layers: Sequence[int] | None = None,
    method: str = "mean_diff",
    position: ReadPosition | None = None,
    batch_size: int = 16,
    padding_side: PaddingSide = "right",
    chat: bool = True,
    progress: bool = True,
    name: str = "",
    seed: int = 0,
    **options: Any,
) -> Vector:
    """Difference-in-means (or `pca_diff`, `probe`) of block outputs between the positive and negative sides.

    A trained method (`preference`, see steerlab.preference) trains against the frozen model instead; `seed` fixes its
    held-out split and batch order, and `options` are its settings. Direction methods are deterministic and take none.
    """
    chosen = _check_layers(model, layers)
    trainer = get_trainer(method)
    if trainer is not None:
        trained: Vector = trainer(
            model, pairs, layers, position, batch_size, chat=chat, progress=progress, name=name, seed=seed, **options
        )
        return trained
    if options:
        raise SteerlabError(f"method {method!r} takes no options {sorted(options)}; only trained methods do.")
    spec = get_method(method)
    read_at = position or pairs.default_position
    items: list[Tokenized] = []
    for pair in pairs.pairs:
        items += [
            tokenize_side(model, pair.positive, read_at, chat),
            tokenize_side(model, pair.negative, read_at, chat),
        ]
    held = held_out_indices(len(pairs))
    sums = _Sums(n_train=len(pairs) - len(held))
    keep = {i for i in range(len(pairs)) if spec.needs_examples or i in held}
    kept: dict[int, dict[int, torch.Tensor]] = {layer: {} for layer in chosen}
    batches = read_batches(model, items, chosen, batch_size, padding_side)
    total = -(-len(items) // batch_size)
    for chunk, acts in tqdm(batches, total=total, desc="extract", disable=not progress, leave=False):
        _consume(chunk, acts, held, keep, sums, kept)
    vector = _build(model, pairs, spec_name=method, sums=sums, kept=kept, held=held, read_at=read_at)
    vector.card.name = name
    return vector


def _check_layers(model: LoadedModel, layers: Sequence[int] | None) -> list[int]:
    chosen = sorted(set(layers)) if layers is not None else list(range(model.n_layers))
    bad = [la for la in chosen if la < 0 or la >= model.n_layers]
    if not chosen or bad:
        raise SteerlabError(f"layers {bad or '[]'} are not blocks of {model.name}, which has 0..{model.n_layers - 1}.")
    return chosen


def _consume(
    chunk: list[int],
    acts: dict[int, torch.Tensor],
    held: set[int],
    keep: set[int],
    sums: _Sums,
    kept: dict[int, dict[int, torch.Tensor]],
) -> None:
    for layer, rows in acts.items():
        rows = rows.cpu()
        for r, item in enumerate(chunk):
            pair, positive = divmod(item, 2)[0], item % 2 == 0
            row = rows[r : r + 1]
            _accumulate(sums.pos if positive else sums.neg, layer, row)
            if pair not in held:
                _accumulate(sums.train_pos if positive else sums.train_neg, layer, row)
            if pair in keep:
                kept[layer][item] = row[0]


def _build(
    model: LoadedModel,
    pairs: PairSet,
    spec_name: str,
    sums: _Sums,
    kept: dict[int, dict[int, torch.Tensor]],
    held: set[int],
    read_at: str,
) -> Vector:
    n = len(pairs)
    spec = get_method(spec_name)
    directions, diagnostics = {}, {}
    for layer in sorted(sums.pos):
        mean_diff = (sums.pos[layer] - sums.neg[layer]) / n
        data = LayerData(mean_diff)
        if spec.needs_examples:
            data.positive = torch.stack([kept[layer][2 * i] for i in range(n)])
            data.negative = torch.stack([kept[layer][2 * i + 1] for i in range(n)])
        directions[layer] = spec.fn(data).float()
        if held:
            diagnostics[layer] = _diagnose(layer, sums, kept, held, directions[layer])
    card = Card(
        base_model=model.name,
        model_fingerprint=model.fingerprint,
        hidden_size=model.hidden_size,
        n_layers=model.n_layers,
        method=spec_name,
        position=read_at,
        n_pairs=n,
        dataset_hash=pairs.content_hash(),
        diagnostics=diagnostics,
        metadata={"pair_kind": pairs.kind, "source": pairs.source, "model_type": model.anatomy.model_type},
    )
    vector = Vector(directions, card)
    card.norms = vector.norms()
    card.recommended_layers = recommend_layers(diagnostics, model.n_layers) or vector.layers
    return vector


def _diagnose(
    layer: int, sums: _Sums, kept: dict[int, dict[int, torch.Tensor]], held: set[int], direction: torch.Tensor
) -> dict[str, float]:
    """Held-out quality of a direction fitted on the other pairs: accuracy, paired accuracy, Cohen's d."""
    n_train = max(sums.n_train, 1)
    mu_pos = sums.train_pos[layer] / n_train
    mu_neg = sums.train_neg[layer] / n_train
    unit = (mu_pos - mu_neg) / (mu_pos - mu_neg).norm().clamp_min(1e-12)
    threshold = float(torch.dot(mu_pos + mu_neg, unit) / 2)
    pos = torch.stack([kept[layer][2 * i] for i in sorted(held)]) @ unit
    neg = torch.stack([kept[layer][2 * i + 1] for i in sorted(held)]) @ unit
    accuracy = float(((pos > threshold).float().sum() + (neg <= threshold).float().sum()) / (2 * len(held)))
    pooled = torch.cat([pos - pos.mean(), neg - neg.mean()]).std().clamp_min(1e-6)
    return {
        "accuracy": accuracy,
        "paired_accuracy": float((pos > neg).float().mean()),
        "separation": float((pos.mean() - neg.mean()) / pooled),
        "norm": float(direction.norm()),
    }


def recommend_layers(diagnostics: dict[int, dict[str, float]], n_layers: int) -> list[int]:
    """A contiguous window (at most a third of the model) around the most separable layer.

    The first and last tenth of the blocks are left out: early blocks hold token identity, the last ones
    write almost straight into the logits, and steering either mostly breaks fluency.
    """
    if not diagnostics:
        return []
    margin = max(1, n_layers // 10)
    eligible = {la: d for la, d in diagnostics.items() if margin <= la < n_layers - margin} or diagnostics
    best = max(eligible, key=lambda la: (eligible[la]["accuracy"], eligible[la]["separation"]))
    floor_acc = eligible[best]["accuracy"] - 0.05
    floor_sep = 0.5 * eligible[best]["separation"]
    width = max(1, n_layers // 3)

    def good(layer: int) -> bool:
        d = eligible.get(layer)
        return d is not None and d["accuracy"] >= floor_acc and d["separation"] >= floor_sep

    lo = hi = best
    while hi - lo + 1 < width:
        grew = False
        if good(lo - 1):
            lo, grew = lo - 1, True
        if hi - lo + 1 < width and good(hi + 1):
            hi, grew = hi + 1, True
        if not grew:
            break
    return list(range(lo, hi + 1))
