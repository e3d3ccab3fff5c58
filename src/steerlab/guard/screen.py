"""The dose check: how far a kit's combined steering cancels each protected direction, as a relative dose.

At each layer l the entries that add (modes add and add_keep_norm) are summed at their scales, Delta_l, and
projected on the protected unit p_l. A negative projection cancels the protected behaviour; its relative dose is
-(Delta_l . p_l) / h_l, the same |s| |v_l| / h_l unit calibration uses (steerlab.residual_norms). An ablation of a
unit u with coefficient c takes away c cos^2(u, p_l) of the protected component, whose typical size at layer l is
|p_l|: the same dose as subtracting c cos^2 p_l, so ablating the protected direction itself at coefficient 1 counts
as subtracting it at scale 1.

The doses of all layers are added, each layer clipped at zero first: strengthening the direction at one layer never
pays for cancelling it at another, and a cancellation spread thinly over many layers still adds up. Because the sum
is taken over the combined kit, a disguise changes nothing: another name, a benign vector mixed in, or the negation
split across entries give the same Delta_l.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from steerlab.errors import SteerlabError
from steerlab.guard.protected import ProtectedDirection
from steerlab.kit import Kit

# Picked from measurement (bench/protect_fpr.py, bench/results/protect_fpr.md): against starter/refusal, the starter
# pack's 84 benign vectors on their recommended layers, with either sign, flag none at relative doses up to 0.7 (the
# top of calibration's default grid) and 3 of 168 at dose 1.0; anti-refusal steering is refused above dose 0.2.
DEFAULT_THRESHOLD = 0.2


@dataclass(frozen=True)
class Breach:
    """A kit that cancels a protected direction: its total dose, and the layer that cancels most."""

    direction: str
    dose: float
    layer: int
    layer_dose: float
    threshold: float

    def message(self) -> str:
        return (
            f"this steering cancels the protected direction {self.direction!r}: relative dose {self.dose:.3f} in "
            f"total (the limit is {self.threshold:g}), most at layer {self.layer} ({self.layer_dose:.3f}). "
            "Lower the scale of the entries that point against it, or steer without them."
        )


class ProtectedDirectionError(SteerlabError):
    def __init__(self, breach: Breach) -> None:
        super().__init__(breach.message())
        self.breach = breach


def cancellation(kit: Kit, protected: ProtectedDirection) -> dict[int, float]:
    """Per protected layer: the relative dose by which `kit` cancels `protected` (0 where it does not)."""
    adds: dict[int, torch.Tensor] = {}
    ablated: dict[int, float] = {}
    for entry in kit.entries:
        if not protected.applies_to(entry.vector):
            continue
        for layer in entry.active_layers():
            unit = protected.units.get(layer)
            if unit is None:
                continue
            direction = entry.vector.directions[layer].detach().float().cpu()
            if entry.mode == "ablate":
                cos = float(direction @ unit) / max(float(direction.norm()), 1e-12)
                ablated[layer] = ablated.get(layer, 0.0) + abs(float(entry.scale)) * cos * cos
            else:
                delta = float(entry.scale) * direction
                adds[layer] = adds[layer] + delta if layer in adds else delta
    doses = {}
    for layer in sorted(set(adds) | set(ablated)):
        pushed = -float(adds[layer] @ protected.units[layer]) if layer in adds else 0.0
        removed = ablated.get(layer, 0.0) * protected.magnitudes[layer]
        doses[layer] = (max(pushed, 0.0) + removed) / protected.norms[layer]
    return doses


class Guard:
    """Screens kits against every protected direction; the first breach found is the one reported."""

    def __init__(self, protected: Sequence[ProtectedDirection], threshold: float = DEFAULT_THRESHOLD) -> None:
        if not threshold > 0:
            raise SteerlabError(f"the protection threshold must be a positive relative dose, got {threshold}.")
        self.protected = list(protected)
        self.threshold = threshold

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.protected]

    def screen(self, kit: Kit | None) -> Breach | None:
        if kit is None:
            return None
        for protected in self.protected:
            doses = cancellation(kit, protected)
            total = sum(doses.values())
            if total > self.threshold:
                layer = max(doses, key=lambda la: doses[la])
                return Breach(protected.name, total, layer, doses[layer], self.threshold)
        return None

    def check(self, kit: Kit | None) -> None:
        breach = self.screen(kit)
        if breach is not None:
            raise ProtectedDirectionError(breach)
