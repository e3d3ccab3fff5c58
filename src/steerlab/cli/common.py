"""Argument parsing shared by the command groups: layer ranges and VECTOR:SCALE specs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from steerlab.errors import SteerlabError

if TYPE_CHECKING:
    from steerlab.vector import Vector


def parse_layers(text: str | None) -> list[int] | None:
    """'8-20', '3,5,7' or '8-12,20' -> sorted block indices; None stays None."""
    if text is None or not text.strip():
        return None
    layers: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            layers.update(range(int(lo), int(hi or lo) + 1))
    except ValueError as exc:
        raise SteerlabError(f"cannot read layers {text!r}: write a range like 8-20 or a list like 3,5,7.") from exc
    return sorted(layers)


VECTOR_HELP = "V.safetensors[:SCALE][@LAYERS], repeatable; what is left out comes from the card (calibrated values)"


def parse_vector_spec(spec: str) -> tuple[Path, float | None, list[int] | None]:
    """'V.safetensors[:SCALE][@LAYERS]' -> (path, scale, layers); None where the spec leaves it out."""
    body, _, layer_text = spec.partition("@")
    path_text, scale = body, None
    head, sep, tail = body.rpartition(":")
    if sep and head:
        try:
            scale = float(tail)
            path_text = head
        except ValueError:
            path_text = body
    return Path(path_text), scale, parse_layers(layer_text or None)


def load_vector_spec(spec: str) -> tuple[Vector, float, list[int] | None]:
    return vector_from_spec(*parse_vector_spec(spec))


def vector_from_spec(
    path: Path, scale: float | None, layers: list[int] | None
) -> tuple[Vector, float, list[int] | None]:
    """The vector, its scale and layers; what the spec leaves out comes from the card (`steerlab calibrate` sets it)."""
    from steerlab.vector import Vector

    vector = Vector.load(path)
    chosen = vector.card.recommended_scale if scale is None else scale
    return vector, chosen, layers or vector.card.recommended_layers or None
