"""Kit: vectors with their scales, layers, positions and modes; the one declarative thing that gets compiled."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from steerlab.errors import SteerlabError
from steerlab.vector import Vector

if TYPE_CHECKING:
    from steerlab.models import LoadedModel

Mode = Literal["add", "ablate", "add_keep_norm"]
Positions = Literal["all", "prompt", "generated"]
MODES: tuple[str, ...] = ("add", "ablate", "add_keep_norm")
POSITIONS: tuple[str, ...] = ("all", "prompt", "generated")


@dataclass
class KitEntry:
    """One vector as it is to be applied. `layers=None` means every layer the vector has."""

    vector: Vector
    scale: float = 1.0
    layers: list[int] | None = None
    positions: Positions = "all"
    mode: Mode = "add"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SteerlabError(f"unknown steering mode {self.mode!r}: use one of {', '.join(MODES)}.")
        if self.positions not in POSITIONS:
            raise SteerlabError(f"unknown positions {self.positions!r}: use one of {', '.join(POSITIONS)}.")
        if self.layers is not None:
            missing = sorted(set(self.layers) - set(self.vector.directions))
            if missing:
                raise SteerlabError(
                    f"layers {missing} were asked for, but vector {self.vector.card.name or ''} only has "
                    f"layers {self.vector.layers[0]}..{self.vector.layers[-1]}."
                )

    def active_layers(self) -> list[int]:
        return sorted(self.layers) if self.layers is not None else self.vector.layers


@dataclass
class KitCard:
    name: str = ""
    description: str = ""
    base_model: str = ""
    author: str = ""
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


@dataclass
class Kit:
    """A named list of entries; `steer(model, kit)` applies them all through one compiled plan."""

    entries: list[KitEntry]
    card: KitCard = field(default_factory=KitCard)

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

    @classmethod
    def load(cls, path: str | Path, model: LoadedModel | None = None) -> Kit:
        """Read a kit file (see steerlab.kitfile): vectors are checked against their recorded hashes."""
        from steerlab.kitfile import load_kit

        return load_kit(path, model)

    def save(self, path: str | Path) -> Path:
        from steerlab.kitfile import save_kit

        return save_kit(self, path)

    def scaled(self, factor: float) -> Kit:
        entries = [KitEntry(e.vector, e.scale * factor, e.layers, e.positions, e.mode) for e in self.entries]
        return Kit(entries, self.card)
