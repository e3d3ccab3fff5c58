"""Held-out calibration of one axis: the layer where its held-out pairs separate best on its direction, and the gap."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from steerlab.capture import read_batches
from steerlab.kit import KitEntry
from steerlab.models import LoadedModel
from steerlab.pairs import PairSet
from steerlab.prompts import tokenize_side
from steerlab.vector import Vector

__all__ = ["HeldOut", "calibrate", "unit_direction"]


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


def unit_direction(vector: Vector, layer: int) -> torch.Tensor:
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
        proj = acts[la] @ unit_direction(entry.vector, la)
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
