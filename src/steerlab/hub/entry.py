"""EntryInfo: what the store says about one published version, the same locally and over HTTP."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from steerlab.hub.catalog import Entry


@dataclass
class EntryInfo:
    namespace: str
    name: str
    version: str
    kind: str
    sha256: str
    size: int
    description: str = ""
    tags: list[str] = field(default_factory=list)
    base_model: str = ""
    fingerprint: str = ""
    hidden_size: int = 0
    n_layers: int = 0
    max_layer: int = -1
    license: str = ""
    author: str = ""
    created_at: str = ""
    published_at: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)
    signature: str | None = None
    public_key: str | None = None
    key_id: str | None = None
    visibility: str = "public"  # public, private or licensed (hub/market.py)
    price: str = ""
    terms: str = ""

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}@{self.version}"

    @property
    def signed(self) -> bool:
        return bool(self.signature)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ref": self.ref}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EntryInfo:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    @classmethod
    def from_row(cls, row: Entry) -> EntryInfo:
        return cls(
            namespace=row.namespace,
            name=row.name,
            version=row.version,
            kind=row.kind,
            sha256=row.sha256,
            size=row.size,
            description=row.description,
            tags=sorted(t.tag for t in row.tags),
            base_model=row.base_model,
            fingerprint=row.fingerprint,
            hidden_size=row.hidden_size,
            n_layers=row.n_layers,
            max_layer=row.max_layer,
            license=row.license,
            author=row.author,
            created_at=row.created_at,
            published_at=row.published_at.isoformat(timespec="seconds") if row.published_at else "",
            metrics=json.loads(row.metrics_json or "{}"),
            card=json.loads(row.card_json),
            signature=row.signature,
            public_key=row.public_key,
            key_id=row.key_id,
            visibility=row.visibility or "public",
            price=row.price or "",
            terms=row.terms or "",
        )


@dataclass(frozen=True)
class Fit:
    """What a model needs of a vector: its hidden size, its block count and (when known) its fingerprint."""

    hidden_size: int
    n_layers: int
    fingerprint: str = ""
    name: str = ""

    @classmethod
    def of(cls, model: Any) -> Fit:
        fingerprint = str(getattr(model, "fingerprint", "") or "")
        return cls(int(model.hidden_size), int(model.n_layers), fingerprint, str(getattr(model, "name", "") or ""))

    def accepts(self, info: EntryInfo) -> bool:
        if info.kind not in ("vector", "condition"):  # a condition, like a vector, reads one model's blocks
            return not info.base_model or not self.name or info.base_model == self.name
        same_arch = not info.fingerprint or not self.fingerprint or info.fingerprint == self.fingerprint
        return info.hidden_size == self.hidden_size and info.max_layer < self.n_layers and same_arch
