"""Compile Kits against a loaded model into per-layer tensors: the only thing the hooks read."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from steerlab.condition import Condition
from steerlab.errors import SteerlabError
from steerlab.kit import Kit, KitCard, KitEntry, Mode, Positions
from steerlab.models import LoadedModel
from steerlab.vector import ExpertVector, Vector

PROMPT, GENERATED = 0, 1
PHASES = (PROMPT, GENERATED)
_PHASES_OF = {"all": PHASES, "prompt": (PROMPT,), "generated": (GENERATED,)}

Steerable = Vector | Kit
RowSteering = Steerable | None


@dataclass
class RowLayer:
    """What one row does at one layer in one phase: a summed addition, ablations, whether norms are kept, and a
    summed router-logit offset per expert (expert entries)."""

    add: torch.Tensor | None = None
    ablate: list[tuple[torch.Tensor, float]] = field(default_factory=list)
    keep_norm: bool = False
    router: torch.Tensor | None = None

    def merged(self, other: RowLayer) -> RowLayer:
        return RowLayer(
            add=_sum(self.add, other.add),
            ablate=self.ablate + other.ablate,
            keep_norm=self.keep_norm or other.keep_norm,
            router=_sum(self.router, other.router),
        )


def _sum(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    return b if a is None else a if b is None else a + b


Gate = tuple[str, ...]  # the keys of the conditions that must all hold; () = always
Layers = dict[int, dict[int, RowLayer]]


@dataclass
class RowPlan:
    """One kit compiled for one model: gate -> layer -> phase -> RowLayer. Gate () is unconditional; the others
    apply to a row only once every condition in them holds for that row's prompt (see `Gates`)."""

    layers: Layers = field(default_factory=dict)
    kit: Kit | None = None
    gated: dict[Gate, Layers] = field(default_factory=dict)
    conditions: dict[str, Condition] = field(default_factory=dict)

    def slot(self, layer: int, phase: int, gate: Gate = ()) -> RowLayer:
        layers = self.layers if not gate else self.gated.setdefault(gate, {})
        return layers.setdefault(layer, {}).setdefault(phase, RowLayer())

    def all_layers(self) -> set[int]:
        found = set(self.layers) | {layer for part in self.gated.values() for layer in part}
        return found | {c.layer for c in self.conditions.values()}

    def effective(self, holds: Callable[[str], bool]) -> Layers:
        """The unconditional layers plus every gated part whose conditions all hold."""
        out: Layers = {layer: dict(phases) for layer, phases in self.layers.items()}
        for gate, part in self.gated.items():
            if not all(holds(key) for key in gate):
                continue
            for layer, phases in part.items():
                for phase, slot in phases.items():
                    mine = out.setdefault(layer, {})
                    mine[phase] = mine[phase].merged(slot) if phase in mine else slot
        return out


@dataclass
class LayerOps:
    """Batched tensors for one layer and phase. Shapes: add [B, H]; each ablation ([B, H] unit, [B] coef);
    router [B, E] float32 logit offsets. B is 1 when every row is steered alike."""

    add: torch.Tensor | None
    ablate: list[tuple[torch.Tensor, torch.Tensor]]
    keep_norm: torch.Tensor | None  # [B] bool, None when no row keeps its norm
    router: torch.Tensor | None = None

    @property
    def changes_hidden(self) -> bool:
        return self.add is not None or bool(self.ablate)


@dataclass
class Gates:
    """The conditions of a plan and, per batch row, what they decided for the current sequences.

    Every prefill forward starts undecided (every gated part off); the block hook at a condition's layer reads it
    and `Plan.decide` turns the parts on for the rows where it holds, for the rest of that forward and every later
    one (decode steps) until the next prefill."""

    conditions: dict[str, Condition]
    decided: dict[str, torch.Tensor] = field(default_factory=dict)  # key -> [B] bool
    scores: dict[str, torch.Tensor] = field(default_factory=dict)  # key -> [B] float32 (absent when seeded)

    def read_at(self, layer: int) -> list[Condition]:
        return [c for c in self.conditions.values() if c.layer == layer and c.key not in self.decided]


@dataclass
class Plan:
    """Per-layer, per-phase ops. `batch_size` None means the same steering for every row (broadcast).
    `gates` is None when nothing in the plan is conditional."""

    ops: dict[int, dict[int, LayerOps]]
    batch_size: int | None
    rows: list[RowPlan]
    gates: Gates | None = None
    target: tuple[int, torch.device, torch.dtype] | None = None  # (hidden, device, dtype) for re-stacking

    @property
    def layers(self) -> list[int]:
        return sorted(self.ops)

    @property
    def router_layers(self) -> list[int]:
        """Layers where some row, decided or not, may offset the router."""
        found = {
            layer
            for row in self.rows
            for part in (row.layers, *row.gated.values())
            for layer, phases in part.items()
            if any(slot.router is not None for slot in phases.values())
        }
        return sorted(found)

    def reset(self) -> None:
        """A new prefill: every condition undecided, only unconditional steering on."""
        if self.gates is not None:
            self.gates.decided.clear()
            self.gates.scores.clear()
            self._restack()

    def decide(self, condition: Condition, scores: torch.Tensor) -> None:
        """Record a condition's [B] scores for the current batch and switch on what it gates in the rows it holds."""
        if self.gates is None:
            raise SteerlabError("this plan has no conditions to decide.")
        if self.batch_size is not None and scores.shape[0] != self.batch_size:
            raise SteerlabError(f"condition scores for {scores.shape[0]} rows; the plan has {self.batch_size}.")
        self.gates.scores[condition.key] = scores.detach().float()
        self.gates.decided[condition.key] = condition.holds(scores).cpu()
        self._restack()

    def seed(self, decisions: Sequence[Mapping[str, bool]]) -> None:
        """Decisions made in an earlier forward (a server's prefill), one mapping per row: condition key -> holds."""
        if self.gates is None:
            return
        for key in self.gates.conditions:
            self.gates.decided[key] = torch.tensor([bool(d.get(key, False)) for d in decisions])
        self._restack()

    def decisions(self, rows: int | None = None) -> list[dict[str, bool]]:
        """Per batch row, condition key -> whether it held. `rows`: the batch size, for a broadcast plan that has
        decided nothing yet."""
        decided = self.gates.decided if self.gates is not None else {}
        n = len(next(iter(decided.values()))) if decided else self.batch_size or rows or 1
        return [{k: bool(v[r]) for k, v in decided.items()} for r in range(n)]

    def report(self, rows: int | None = None) -> list[dict[str, Any]]:
        """Per batch row: each condition with its score, threshold and decision, and whether the row was steered at
        all. What `generate(details=...)` and the server's audit log record."""
        scores = self.gates.scores if self.gates is not None else {}
        out = []
        for r, decided in enumerate(self.decisions(rows)):
            row = self.rows[r if self.batch_size is not None else 0]
            records = []
            for cond in row.conditions.values():
                score = scores.get(cond.key)
                holds = decided.get(cond.key)
                records.append({**cond.describe(), "score": None if score is None else float(score[r]), "holds": holds})
            steered = bool(row.layers) or any(all(decided.get(k, False) for k in gate) for gate in row.gated)
            out.append({"conditions": records, "steered": steered})
        return out

    def _restack(self) -> None:
        assert self.gates is not None and self.target is not None
        decided = self.gates.decided
        # A broadcast plan learns its batch size from the first decision: every row gets the one kit.
        rows = self.rows
        if self.batch_size is None and decided:
            rows = rows * len(next(iter(decided.values())))
        layers = sorted(set().union(*(row.all_layers() for row in self.rows)))
        per_row = [row.effective(_holds_in(decided, r)) for r, row in enumerate(rows)]
        self.ops = _stack_layers(self.target, per_row, layers)


def as_kit(
    what: Steerable,
    scale: float | None = None,
    layers: Sequence[int] | None = None,
    positions: Positions | None = None,
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
        entries = [dataclasses.replace(e, layers=[la for la in e.active_layers() if la in keep]) for e in kit.entries]
        return Kit(entries, kit.card, kit.condition)
    raise SteerlabError(f"cannot steer with a {type(what).__name__}: pass a Vector, a Kit, or a list of them per row.")


def _holds_in(decided: dict[str, torch.Tensor], row: int) -> Callable[[str], bool]:
    return lambda key: key in decided and bool(decided[key][row])


def compile_row(model: LoadedModel, kit: Kit | None) -> RowPlan:
    row = RowPlan(kit=kit)
    if kit is None:
        return row
    for entry in kit.entries:
        entry.vector.check_compatible(model)
        conditions = kit.conditions_of(entry)
        for condition in conditions:
            condition.check_compatible(model)
            row.conditions[condition.key] = condition
        gate = tuple(sorted(c.key for c in conditions))
        for layer in entry.active_layers():
            for phase in _PHASES_OF[entry.positions]:
                _add_entry(model, row.slot(layer, phase, gate), entry, layer)
    return row


def _add_entry(model: LoadedModel, slot: RowLayer, entry: KitEntry, layer: int) -> None:
    if isinstance(entry.vector, ExpertVector):
        offset = entry.scale * entry.vector.offsets[layer].to(device=model.device, dtype=torch.float32)
        slot.router = offset if slot.router is None else slot.router + offset
        return
    direction = entry.vector.directions[layer].to(device=model.device, dtype=model.dtype)
    if entry.mode == "ablate":
        unit = direction / direction.float().norm().clamp_min(1e-12).to(direction.dtype)
        slot.ablate.append((unit, float(entry.scale)))
        return
    delta = entry.scale * direction
    slot.add = delta if slot.add is None else slot.add + delta
    slot.keep_norm = slot.keep_norm or entry.mode == "add_keep_norm"


def stack_rows(
    model: LoadedModel,
    rows: list[RowPlan],
    broadcast: bool = False,
    decisions: Sequence[Mapping[str, bool]] | None = None,
) -> Plan:
    """Batch per-row plans into per-layer tensors (rows without steering at a layer get zeros). Conditional parts
    start off; `decisions` (one mapping per row, condition key -> holds) seeds them, e.g. for decode steps after a
    prefill that decided them (`Plan.decisions()`)."""
    target = (model.hidden_size, model.device, model.dtype)
    conditions = {key: c for row in rows for key, c in row.conditions.items()}
    gates = Gates(conditions) if conditions else None
    layers = sorted(set().union(*(row.all_layers() for row in rows))) if rows else []
    plan = Plan(
        ops=_stack_layers(target, [row.layers for row in rows], layers),
        batch_size=None if broadcast else len(rows),
        rows=rows,
        gates=gates,
        target=target,
    )
    if decisions is not None:
        if len(decisions) != len(rows):
            raise SteerlabError(f"{len(decisions)} decisions were given for {len(rows)} rows.")
        plan.seed(decisions)
    return plan


def _stack_layers(
    target: tuple[int, torch.device, torch.dtype], per_row: list[Layers], layers: list[int]
) -> dict[int, dict[int, LayerOps]]:
    return {
        layer: {
            phase: _stack_phase(target, [r.get(layer, {}).get(phase) for r in per_row]) for phase in PHASES
        }
        for layer in layers
    }


def _stack_phase(target: tuple[int, torch.device, torch.dtype], slots: list[RowLayer | None]) -> LayerOps:
    hidden, device, dtype = target
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
    return LayerOps(add=add, ablate=ablate, keep_norm=keep_norm, router=_stack_router(slots, device))


def _stack_router(slots: list[RowLayer | None], device: torch.device) -> torch.Tensor | None:
    offsets = [s.router for s in slots if s is not None and s.router is not None]
    if not offsets:
        return None
    if len({o.numel() for o in offsets}) != 1:
        raise SteerlabError("expert offsets for one block disagree on its number of experts across rows.")
    zeros = torch.zeros_like(offsets[0])
    return torch.stack([s.router if s is not None and s.router is not None else zeros for s in slots]).to(device)


def compile_plan(
    model: LoadedModel,
    what: Steerable | Sequence[RowSteering],
    scale: float | None = None,
    layers: Sequence[int] | None = None,
    positions: Positions | None = None,
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
