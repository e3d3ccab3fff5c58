"""Kit: vectors with their scales, layers, positions and modes; the one declarative thing that gets compiled."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from steerlab.condition import Condition
from steerlab.errors import SteerlabError
from steerlab.kitschema import Mode, Positions, check_mode, check_positions
from steerlab.vector import ExpertVector, Vector

__all__ = ["EntrySource", "Kit", "KitCard", "KitEntry", "Mode", "Positions"]


@dataclass
class KitEntry:
    """One vector as it is to be applied. `layers=None` means every layer the vector has. `when`: a Condition that
    must hold for a row's prompt for this entry to steer that row (None: always)."""

    vector: Vector
    scale: float = 1.0
    layers: list[int] | None = None
    positions: Positions = "all"
    mode: Mode = "add"
    when: Condition | None = None

    def __post_init__(self) -> None:
        check_mode(self.mode)
        check_positions(self.positions)
        if isinstance(self.vector, ExpertVector) and self.mode != "add":
            raise SteerlabError(f"an expert vector adds router-logit offsets; mode {self.mode!r} is for residuals.")
        if self.when is not None and not isinstance(self.when, Condition):
            raise SteerlabError(f"'when' must be a steerlab.Condition, got a {type(self.when).__name__}.")
        if self.layers is not None:
            missing = sorted(set(self.layers) - set(self.vector.directions))
            if missing:
                raise SteerlabError(
                    f"layers {missing} were asked for, but vector {self.vector.card.name or ''} only has "
                    f"layers {self.vector.layers[0]}..{self.vector.layers[-1]}."
                )

    @classmethod
    def from_card(
        cls,
        vector: Vector,
        scale: float | None = None,
        layers: Sequence[int] | None = None,
        positions: Positions | None = None,
        mode: Mode = "add",
    ) -> KitEntry:
        """The one rule for what a caller leaves out. scale None: the card's recommended_scale, which is 1.0 until
        `steerlab calibrate` (or the bench, or the vector's author) sets it. layers None: the card's
        recommended_layers if it has any, else every layer the vector has. positions None: the card's
        recommended_positions, where its scale was calibrated ("all" until then)."""
        chosen_scale = vector.card.recommended_scale if scale is None else scale
        chosen_layers = list(layers) if layers is not None else (list(vector.card.recommended_layers) or None)
        chosen_positions = positions or vector.card.recommended_positions
        return cls(vector, float(chosen_scale), chosen_layers, chosen_positions, mode)  # type: ignore[arg-type]

    def active_layers(self) -> list[int]:
        return sorted(self.layers) if self.layers is not None else self.vector.layers


@dataclass(frozen=True)
class EntrySource:
    """Where one entry's vector came from: a file (kit files, vector files) or a store ref, and the sha256 of the
    bytes it was read from, which is what an auditor can check."""

    name: str
    sha256: str
    origin: str
    file: Path | None = None
    pairs: Path | None = None


@dataclass
class KitCard:
    name: str = ""
    description: str = ""
    base_model: str = ""
    author: str = ""
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


@dataclass
class Kit:
    """A named list of entries; `steer(model, kit)` applies them all through one compiled plan. `condition`: when
    set (`kit.when(c)`), the whole kit steers only the rows whose prompt the condition holds for."""

    entries: list[KitEntry]
    card: KitCard = field(default_factory=KitCard)
    condition: Condition | None = None

    @classmethod
    def single(
        cls,
        vector: Vector,
        scale: float = 1.0,
        layers: list[int] | None = None,
        positions: Positions = "all",
        mode: Mode = "add",
    ) -> Kit:
        return cls([KitEntry(vector, scale, layers, positions, mode)], KitCard(name=vector.card.name))

    def scaled(self, factor: float) -> Kit:
        entries = [dataclasses.replace(e, scale=e.scale * factor) for e in self.entries]
        return Kit(entries, self.card, self.condition)

    def when(self, condition: Condition | None) -> Kit:
        """This kit, applied only to the rows whose prompt `condition` holds for (None: to every row)."""
        if condition is not None and not isinstance(condition, Condition):
            raise SteerlabError(f"Kit.when takes a steerlab.Condition, got a {type(condition).__name__}.")
        return Kit(list(self.entries), self.card, condition)

    def conditions_of(self, entry: KitEntry) -> tuple[Condition, ...]:
        """Every condition that must hold for `entry` to steer a row: the kit's and the entry's own."""
        found = [c for c in (self.condition, entry.when) if c is not None]
        return tuple({c.key: c for c in found}.values())

    def standalone_entries(self) -> list[KitEntry]:
        """The entries with the kit's condition moved into each (`when`), for putting them in another kit.
        An entry with a different condition of its own cannot carry both: that is an error."""
        if self.condition is None:
            return list(self.entries)
        out = []
        for entry in self.entries:
            if entry.when is not None and entry.when.key != self.condition.key:
                raise SteerlabError(
                    f"kit {self.card.name or ''} has a condition and an entry with another one; use the kit on its "
                    "own (one address), not combined with other addresses."
                )
            out.append(dataclasses.replace(entry, when=self.condition))
        return out

    @property
    def conditions(self) -> list[Condition]:
        found = [c for e in self.entries for c in self.conditions_of(e)]
        return list({c.key: c for c in found}.values())
