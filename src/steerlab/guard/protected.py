"""Protected directions: vectors an operator names whose negation (or ablation) a request may not apply.

`--protect ADDRESS` takes any address the front door takes: a vector file or a store ref such as `starter/refusal`
(the shipped starter pack). Every layer of the vector is protected unless the address names @LAYERS: a vector's
recommended layers say where it steers best, not where its removal stops mattering. A `:SCALE` with a minus sign
protects the opposite direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from steerlab.address import parse_address
from steerlab.errors import SteerlabError
from steerlab.frontdoor import find
from steerlab.vector import Vector


@dataclass(frozen=True)
class ProtectedDirection:
    """Per protected layer l: the unit direction p_l, its magnitude |p_l|, and the reference residual norm h_l."""

    name: str
    units: dict[int, torch.Tensor]
    magnitudes: dict[int, float]
    norms: dict[int, float]
    hidden_size: int
    fingerprint: str = ""

    def applies_to(self, vector: Vector) -> bool:
        """Whether `vector` lives in this direction's space (same width and, where both record it, same model)."""
        theirs = vector.card.model_fingerprint
        return vector.hidden_size == self.hidden_size and not (
            theirs and self.fingerprint and theirs != self.fingerprint
        )


def protect_vector(
    vector: Vector, name: str, norms: dict[int, float], layers: list[int] | None = None
) -> ProtectedDirection:
    """A protected direction from a vector; `norms` must cover every protected layer."""
    chosen = layers if layers is not None else vector.layers
    missing = sorted(set(chosen) - set(vector.directions))
    unmeasured = sorted(set(chosen) - set(norms))
    if missing or unmeasured:
        what = f"the vector has no layers {missing}" if missing else f"no reference norm for layers {unmeasured}"
        raise SteerlabError(f"cannot protect {name!r}: {what}.")
    units, magnitudes = {}, {}
    for layer in chosen:
        direction = vector.directions[layer].detach().float().cpu()
        magnitude = float(direction.norm())
        if not magnitude > 0 or not torch.isfinite(direction).all():
            raise SteerlabError(f"cannot protect {name!r}: its direction at layer {layer} is zero or not finite.")
        units[layer], magnitudes[layer] = direction / magnitude, magnitude
    return ProtectedDirection(
        name, units, magnitudes, {la: norms[la] for la in chosen}, vector.hidden_size, vector.card.model_fingerprint
    )


def load_protected(
    address: str, norms: dict[int, float] | None = None, store: Any = None, model: Any = None
) -> ProtectedDirection:
    """The protected direction an address names. `norms` None: the reference norms shipped for its model. `model`:
    when given, the vector must fit it (a protected direction of another model would protect nothing)."""
    from steerlab.guard.norms import shipped_norms

    parsed = parse_address(address)
    found = find(address, store, model)
    if len(found.kit.entries) != 1:
        raise SteerlabError(
            f"--protect {address!r} names a kit of {len(found.kit.entries)} vectors; protect each vector on its own."
        )
    vector = found.kit.entries[0].vector
    if parsed.scale is not None and parsed.scale < 0:
        vector = -vector
    name = vector.card.name or found.sources[0].name
    if norms is None:
        norms = shipped_norms(vector.card.model_fingerprint, vector.card.base_model)
    return protect_vector(vector, name, norms, parsed.layers)
