"""Persistent slot tables: every kit in use compiled into fixed buffers that the steering op reads.

Row 0 of every layer's table is "no steering" (zeros). Slot s owns two rows: 1 + 2s for prompt tokens and 2 + 2s for
generated tokens, so positions (`prompt` / `generated` / `all`) are decided per token by the row index alone. A slot
holds one kit's whole compiled plan: the summed addition, up to `max_ablations` ablation units with their
coefficients, and the norm-keeping flag, per layer and phase. The buffers are allocated once; filling a slot writes
into them in place, so a compiled graph keeps reading the same addresses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from steerlab.errors import SteerlabError
from steerlab.plan import GENERATED, PROMPT, RowLayer, RowPlan

NO_STEERING = 0


def row_of(slot: int, phase: int) -> int:
    """The table row of a slot's prompt (phase 0) or generated (phase 1) tokens."""
    return 1 + 2 * slot + phase


@dataclass(frozen=True)
class TableShape:
    n_layers: int
    hidden: int
    n_slots: int
    max_ablations: int
    max_tokens: int
    dtype: torch.dtype
    device: torch.device

    @property
    def rows(self) -> int:
        return 1 + 2 * self.n_slots


class SlotTables:
    """The buffers, one set per decoder layer (views into one allocation each), and the per-token row index."""

    def __init__(self, shape: TableShape) -> None:
        self.shape = shape
        n, r, k, h = shape.n_layers, shape.rows, shape.max_ablations, shape.hidden
        dev, dt = shape.device, shape.dtype
        self.add = torch.zeros(n, r, h, dtype=dt, device=dev)
        # At least one ablation column, so the op's signature is the same whatever the limit.
        self.units = torch.zeros(n, r, max(k, 1), h, dtype=dt, device=dev)
        self.coefs = torch.zeros(n, r, max(k, 1), dtype=dt, device=dev)
        self.keep_norm = torch.zeros(n, r, dtype=dt, device=dev)
        self.token_rows = torch.zeros(shape.max_tokens, dtype=torch.int64, device=dev)
        # Read on the host by the op, so it can skip a layer that no slot steers at no cost.
        self.live = torch.zeros(n, 3, dtype=torch.int64)
        self._slot_layers: dict[int, set[int]] = {}
        self._slot_ablations: dict[int, dict[int, int]] = {}
        self._slot_keeps: dict[int, set[int]] = {}

    def layer_buffers(self, layer: int) -> tuple[torch.Tensor, ...]:
        """What the op reads for one layer, after (hidden, residual): token rows, add, units, coefs, keep, live."""
        return (
            self.token_rows,
            self.add[layer],
            self.units[layer],
            self.coefs[layer],
            self.keep_norm[layer],
            self.live[layer],
        )

    def fill(self, slot: int, plan: RowPlan) -> None:
        """Write one kit's compiled row plan into `slot` (whatever was there is cleared first)."""
        if plan.gated or plan.conditions:  # the gated parts would be dropped without a word: refuse them
            raise SteerlabError(
                "a conditional kit ('when') cannot go into the vLLM steering tables: the engine has no conditional "
                "steering yet. Serve it with `steerlab serve`."
            )
        self.clear(slot)
        ablations: dict[int, int] = {}
        keeps: set[int] = set()
        for layer, phases in plan.layers.items():
            for phase in (PROMPT, GENERATED):
                part = phases.get(phase)
                if part is not None:
                    used = self._write(layer, row_of(slot, phase), part)
                    ablations[layer] = max(ablations.get(layer, 0), used)
                    if part.keep_norm:
                        keeps.add(layer)
        self._slot_layers[slot] = set(plan.layers)
        self._slot_ablations[slot] = ablations
        self._slot_keeps[slot] = keeps
        self._refresh_live()

    def clear(self, slot: int) -> None:
        for layer in self._slot_layers.pop(slot, set()):
            for phase in (PROMPT, GENERATED):
                row = row_of(slot, phase)
                self.add[layer, row].zero_()
                self.units[layer, row].zero_()
                self.coefs[layer, row].zero_()
                self.keep_norm[layer, row] = 0
        self._slot_ablations.pop(slot, None)
        self._slot_keeps.pop(slot, None)
        self._refresh_live()

    def set_token_rows(self, rows: torch.Tensor) -> None:
        """Point each token of the coming step at its table row (rows past the batch are left as they are: the op
        reads only the first T)."""
        count = rows.numel()
        if count > self.shape.max_tokens:
            raise SteerlabError(f"a step of {count} tokens; the steering tables hold {self.shape.max_tokens}.")
        self.token_rows[:count].copy_(rows, non_blocking=True)

    def _write(self, layer: int, row: int, part: RowLayer) -> int:
        if part.router is not None:
            raise SteerlabError("expert (router) vectors are not supported on the vLLM engine yet.")
        if len(part.ablate) > self.shape.max_ablations:
            raise SteerlabError(
                f"the kit ablates {len(part.ablate)} directions at block {layer}; the vLLM tables hold "
                f"{self.shape.max_ablations} per layer (raise max_ablations in the plugin's settings)."
            )
        if part.add is not None:
            self.add[layer, row].copy_(part.add)
        for k, (unit, coef) in enumerate(part.ablate):
            self.units[layer, row, k].copy_(unit)
            self.coefs[layer, row, k] = coef
        self.keep_norm[layer, row] = 1.0 if part.keep_norm else 0.0
        return len(part.ablate)

    def _refresh_live(self) -> None:
        # Worked out in plain Python and written once: one tensor write per (slot, layer) made every fill cost
        # milliseconds with many slots, which showed in time to first token with 64 distinct kits.
        flags = [[0, 0, 0] for _ in range(self.shape.n_layers)]
        for slot, layers in self._slot_layers.items():
            for layer in layers:
                row = flags[layer]
                row[0] = 1
                row[1] = max(row[1], self._slot_ablations[slot].get(layer, 0))
                row[2] = row[2] or int(layer in self._slot_keeps[slot])
        self.live.copy_(torch.tensor(flags, dtype=torch.int64))
