"""Compile Kits against a loaded model into per-layer tensors: the only thing the hooks read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from steerlab.errors import SteerlabError
from steerlab.kit import Kit, KitCard, KitEntry, Mode, Positions
from steerlab.models import LoadedModel
from steerlab.vector import Vector

PROMPT, GENERATED = 0, 1
PHASES = (PROMPT, GENERATED)
_PHASES_OF = {"all": PHASES, "prompt": (PROMPT,), "generated": (GENERATED,)}

Steerable = Vector | Kit
RowSteering = Steerable | None


@dataclass
class RowLayer:
    """What one row does at one layer in one phase: a summed addition, ablations, and whether norms are kept."""

    add: torch.Tensor | None = None
    ablate: list[tuple[torch.Tensor, float]] = field(default_factory=list)
    keep_norm: bool = False


@dataclass
class RowPlan:
    """One kit compiled for one model: layer -> phase -> RowLayer."""

    layers: dict[int, dict[int, RowLayer]] = field(default_factory=dict)
    kit: Kit | None = None

    def slot(self, layer: int, phase: int) -> RowLayer:
        return self.layers.setdefault(layer, {}).setdefault(phase, RowLayer())


@dataclass
class LayerOps:
    """Batched tensors for one layer and phase. Shapes: add [B, H]; each ablation ([B, H] unit, [B] coef)."""

    add: torch.Tensor | None
    ablate: list[tuple[torch.Tensor, torch.Tensor]]
    keep_norm: torch.Tensor | None  # [B] bool, None when no row keeps its norm


@dataclass
class Plan:
    """Per-layer, per-phase ops. `batch_size` None means the same steering for every row (broadcast)."""

    ops: dict[int, dict[int, LayerOps]]
    batch_size: int | None
    rows: list[RowPlan]

    @property
    def layers(self) -> list[int]:
        return sorted(self.ops)


def as_kit(
    what: Steerable,
    scale: float | None = None,
    layers: Sequence[int] | None = None,
    positions: Positions = "all",
    mode: Mode = "add",
) -> Kit:
    """A Vector becomes a one-entry kit (what is left out comes from its card: `KitEntry.from_card`); a Kit is
    scaled by `scale` (None: as it is) and, if `layers` is given, restricted to them."""
    if isinstance(what, Vector):
        return Kit([KitEntry.from_card(what, scale, layers, positions, mode)], KitCard(name=what.card.name))
    if isinstance(what, Kit):
        kit = what.scaled(scale) if scale is not None and scale != 1.0 else what
        if layers is None:
            return kit
        keep = set(layers)
        entries = [
            KitEntry(e.vector, e.scale, [la for la in e.active_layers() if la in keep], e.positions, e.mode)
            for e in kit.entries
        ]
        return Kit(entries, kit.card)
    raise SteerlabError(f"cannot steer with a {type(what).__name__}: pass a Vector, a Kit, or a list of them per row.")


def compile_row(model: LoadedModel, kit: Kit | None) -> RowPlan:
    row = RowPlan(kit=kit)
    if kit is None:
        return row
    for entry in kit.entries:
        entry.vector.check_compatible(model)
        for layer in entry.active_layers():
            direction = entry.vector.directions[layer].to(device=model.device, dtype=model.dtype)
            for phase in _PHASES_OF[entry.positions]:
                _add_entry(row.slot(layer, phase), entry, direction)
    return row


def _add_entry(slot: RowLayer, entry: KitEntry, direction: torch.Tensor) -> None:
    if entry.mode == "ablate":
        unit = direction / direction.float().norm().clamp_min(1e-12).to(direction.dtype)
        slot.ablate.append((unit, float(entry.scale)))
        return
    delta = entry.scale * direction
    slot.add = delta if slot.add is None else slot.add + delta
    slot.keep_norm = slot.keep_norm or entry.mode == "add_keep_norm"


def stack_rows(model: LoadedModel, rows: list[RowPlan], broadcast: bool = False) -> Plan:
    """Batch per-row plans into per-layer tensors (rows without steering at a layer get zeros)."""
    ops: dict[int, dict[int, LayerOps]] = {}
    layers = sorted({layer for row in rows for layer in row.layers})
    for layer in layers:
        ops[layer] = {
            phase: _stack_phase(model, [r.layers.get(layer, {}).get(phase) for r in rows]) for phase in PHASES
        }
    return Plan(ops=ops, batch_size=None if broadcast else len(rows), rows=rows)


def _stack_phase(model: LoadedModel, slots: list[RowLayer | None]) -> LayerOps:
    hidden, device, dtype = model.hidden_size, model.device, model.dtype
    zeros = torch.zeros(hidden, device=device, dtype=dtype)
    add = None
    if any(s is not None and s.add is not None for s in slots):
        add = torch.stack([s.add if s is not None and s.add is not None else zeros for s in slots])
    depth = max((len(s.ablate) for s in slots if s is not None), default=0)
    ablate = []
    for k in range(depth):
        units = [s.ablate[k][0] if s is not None and k < len(s.ablate) else zeros for s in slots]
        coefs = [s.ablate[k][1] if s is not None and k < len(s.ablate) else 0.0 for s in slots]
        ablate.append((torch.stack(units), torch.tensor(coefs, device=device, dtype=dtype)))
    keep = [bool(s is not None and s.keep_norm) for s in slots]
    keep_norm = torch.tensor(keep, device=device) if any(keep) else None
    return LayerOps(add=add, ablate=ablate, keep_norm=keep_norm)


def compile_plan(
    model: LoadedModel,
    what: Steerable | Sequence[RowSteering],
    scale: float | None = None,
    layers: Sequence[int] | None = None,
    positions: Positions = "all",
    mode: Mode = "add",
) -> Plan:
    """One kit for every row, or a list with one entry per batch row (None = that row is not steered).

    `scale` None: a Vector steers at its card's calibrated scale (1.0 if uncalibrated), a Kit at its own scales."""
    if isinstance(what, Vector | Kit):
        row = compile_row(model, as_kit(what, scale, layers, positions, mode))
        return stack_rows(model, [row], broadcast=True)
    if isinstance(what, Sequence) and not isinstance(what, str | bytes):
        kits = [None if w is None else as_kit(w, scale, layers, positions, mode) for w in what]
        if not kits:
            raise SteerlabError("a per-row steering list must have one entry per batch row; it was empty.")
        return stack_rows(model, [compile_row(model, kit) for kit in kits])
    raise SteerlabError(f"cannot steer with a {type(what).__name__}: pass a Vector, a Kit, or a list of them per row.")
