"""Slots per distinct kit: shared by every request with the same kit hash, freed least-recently-used when unused.

A slot stays filled after its last request finishes, so a kit that comes back finds its tables already written; it
is reused for another kit only when no running request holds it. `acquire` returns None when every slot is held:
the scheduler never starts a kit that would find no free slot (steerlab.vllm.waiting: it waits instead), so that
never happens inside a step, and a kit is never put in a slot another running request is using.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class SlotPool:
    n_slots: int
    holders: dict[int, set[str]] = field(default_factory=dict)  # slot -> request ids using it
    by_hash: OrderedDict[str, int] = field(default_factory=OrderedDict)  # kit hash -> slot, least recent first

    def __post_init__(self) -> None:
        if self.n_slots < 1:
            raise ValueError(f"max steering slots must be at least 1, got {self.n_slots}.")

    def acquire(self, kit_hash: str, request_id: str) -> tuple[int, bool] | None:
        """The slot for `kit_hash` and whether it must be (re)filled; None when every slot is held by other kits."""
        slot = self.by_hash.get(kit_hash)
        if slot is not None:
            self.by_hash.move_to_end(kit_hash)
            self.holders.setdefault(slot, set()).add(request_id)
            return slot, False
        slot = self._free_slot()
        if slot is None:
            return None
        self.by_hash[kit_hash] = slot
        self.holders[slot] = {request_id}
        return slot, True

    def release(self, request_id: str) -> None:
        for holders in self.holders.values():
            holders.discard(request_id)

    def hold_only(self, request_ids: set[str]) -> None:
        """A new step: only the requests in it hold slots (finished and preempted ones let go)."""
        for holders in self.holders.values():
            holders.intersection_update(request_ids)

    def slot_of(self, kit_hash: str) -> int | None:
        return self.by_hash.get(kit_hash)

    def _free_slot(self) -> int | None:
        used = set(self.by_hash.values())
        for slot in range(self.n_slots):
            if slot not in used:
                return slot
        for old_hash, slot in self.by_hash.items():  # least recently used first
            if not self.holders.get(slot):
                del self.by_hash[old_hash]
                return slot
        return None
