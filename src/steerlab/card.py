"""Card: the metadata every vector carries, and the constants of the vector file format.

Kept apart from `steerlab.vector` (which needs torch) so that the hub can list, validate and verify vectors without it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from steerlab.errors import SteerlabError

CARD_KEY = "steerlab.card"
FORMAT_VERSION = 1
LAYER_CONVENTION = "block_output"  # direction N is added to the output of decoder block N = hidden_states[N + 1]
# A condition file (steerlab.condition): one direction tensor, and a card with this site whose metadata.condition
# holds {layer, threshold, reading}. Here so that the store validates condition uploads without torch.
CONDITION_SITE = "condition"
CONDITION_TENSOR = "condition.direction"
CONDITION_READINGS: tuple[str, ...] = ("mean", "last")


@dataclass
class Card:
    """Standard metadata carried by every vector; serialised as JSON in the safetensors header."""

    base_model: str = ""
    model_fingerprint: str = ""
    hidden_size: int = 0
    n_layers: int = 0
    layer_convention: str = LAYER_CONVENTION
    site: str = "residual"
    method: str = ""
    position: str = ""
    n_pairs: int = 0
    dataset_hash: str = ""
    norms: dict[int, float] = field(default_factory=dict)
    diagnostics: dict[int, dict[str, float]] = field(default_factory=dict)
    recommended_layers: list[int] = field(default_factory=list)
    recommended_scale: float = 1.0
    # Which tokens the calibrated scale was measured on: "all", "prompt" or "generated" (kitschema.Positions).
    recommended_positions: str = "all"
    name: str = ""
    description: str = ""
    author: str = ""
    license: str = ""
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    metadata: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Card:
        raw = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raw.setdefault("metadata", {}).setdefault("unknown_card_fields", {}).update({k: raw[k] for k in unknown})
        kwargs = {k: v for k, v in raw.items() if k in known}
        # JSON turns int keys into strings; layer indices are ints everywhere else.
        kwargs["norms"] = {int(k): float(v) for k, v in kwargs.get("norms", {}).items()}
        kwargs["diagnostics"] = {int(k): v for k, v in kwargs.get("diagnostics", {}).items()}
        return cls(**kwargs)


def check_fingerprint(card: Card, model: Any, what: str = "vector") -> None:
    """Refuse a model whose architecture fingerprint differs from the one `card` was made on."""
    fp = card.model_fingerprint
    if fp and model.fingerprint and fp != model.fingerprint:
        raise SteerlabError(
            f"{what} was made for {card.base_model or 'another model'} (fingerprint {fp}), but "
            f"{model.name} has fingerprint {model.fingerprint}: the architectures differ. "
            "Make it again on this model, or clear card.model_fingerprint if you know it transfers."
        )
