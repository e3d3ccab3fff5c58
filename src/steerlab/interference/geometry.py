"""The geometry of a kit: cosines between its entries' directions, and Gram-Schmidt orthogonalisation.

Residual directions only: an expert entry (ExpertVector) holds router-logit offsets, which live in no residual space,
so it has no cosine with anything (NaN) and Gram-Schmidt leaves it as it is.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import torch

from steerlab.kit import Kit, KitEntry
from steerlab.vector import ExpertVector, Vector

__all__ = ["cosine_by_layer", "cosine_matrix", "orthogonalize_kit"]


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float(torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12))


def cosine_by_layer(a: KitEntry, b: KitEntry) -> dict[int, float]:
    """Cosine of the two directions at every layer both entries steer (none when either is an expert entry)."""
    if is_router(a) or is_router(b):
        return {}
    shared = sorted(set(a.active_layers()) & set(b.active_layers()))
    return {la: _cos(a.vector.directions[la], b.vector.directions[la]) for la in shared}


def is_router(entry: KitEntry) -> bool:
    """An expert entry: router-logit offsets, for which residual-stream diagnostics are not defined."""
    return isinstance(entry.vector, ExpertVector)


def cosine_matrix(kit: Kit) -> list[list[float]]:
    """Mean over shared layers of the per-layer cosine; NaN where two entries share no layer."""
    n = len(kit.entries)
    out = [[1.0] * n for _ in range(n)]
    for i, j in itertools.combinations(range(n), 2):
        per_layer = cosine_by_layer(kit.entries[i], kit.entries[j])
        value = sum(per_layer.values()) / len(per_layer) if per_layer else math.nan
        out[i][j] = out[j][i] = value
    return out


def orthogonalize_kit(kit: Kit) -> Kit:
    """Gram-Schmidt in entry order, layer by layer: entry k loses its components along entries 0..k-1 (as already
    orthogonalised). Scales, layers, positions, modes and conditions are kept; the first entry is unchanged, and so
    are expert entries (they are not residual directions)."""
    done: list[Vector] = []
    entries = []
    for entry in kit.entries:
        if is_router(entry):
            entries.append(entry)
            continue
        vector = entry.vector
        for earlier in done:
            vector = vector.orthogonalized(earlier)
        if done:
            vector.card.name = entry.vector.card.name
            vector.card.metadata = {**vector.card.metadata, "derived": "Gram-Schmidt against earlier kit entries"}
        done.append(vector)
        entries.append(dataclasses.replace(entry, vector=vector))
    return Kit(entries, kit.card, kit.condition)
