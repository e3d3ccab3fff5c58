"""One vector per layer window for trained methods, so calibration applies directions that were trained together.

Calibration tries each candidate window on its own (calibrate.py). An extracted method (mean_diff, pca, ...) reads
each layer independently, so one extraction over every window's layers gives the same directions as one per window.
A trained method does not: its layers are optimised jointly, at a dose spread over all of them, and a window cut out
of a vector trained on three windows carries a third of the push it was trained to make together with the other
two. So a trained method is trained once per window, and the windows' directions are merged into one Vector (the
windows are disjoint). After calibration `adopt_window` makes the card describe the window that was chosen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from steerlab.methods import get_trainer
from steerlab.vector import Vector

__all__ = ["adopt_window", "extract_per_window"]

Extract = Callable[[Sequence[int]], Vector]


def _disjoint(windows: Sequence[Sequence[int]]) -> bool:
    layers = [la for w in windows for la in w]
    return len(layers) == len(set(layers))


def extract_per_window(extract: Extract, method: str, windows: Sequence[Sequence[int]]) -> Vector:
    """`extract(layers)` once over every window's layers, or once per window for a trained method."""
    if get_trainer(method) is None or len(windows) < 2 or not _disjoint(windows):
        return extract(sorted({la for w in windows for la in w}))
    return _merge([extract(list(w)) for w in windows])


def _merge(parts: list[Vector]) -> Vector:
    directions = {la: d for part in parts for la, d in part.directions.items()}
    first = parts[0].card
    by_window = [_training(p) for p in parts]
    card = dataclasses.replace(
        first,
        norms={la: n for p in parts for la, n in p.card.norms.items()},
        diagnostics={la: d for p in parts for la, d in p.card.diagnostics.items()},
        recommended_layers=sorted(directions),
        metadata={**first.metadata, "training_by_window": by_window},
    )
    return Vector(directions, card)


def _training(part: Vector) -> dict[str, Any]:
    return {"layers": list(part.layers), **part.card.metadata.get("training", {})}


def adopt_window(vector: Vector, layers: Sequence[int]) -> Vector:
    """The card's `training` becomes that of the window trained on `layers` (no-op for a single training)."""
    chosen = [t for t in vector.card.metadata.get("training_by_window", []) if t.get("layers") == list(layers)]
    if chosen:
        vector.card.metadata["training"] = chosen[0]
    return vector
