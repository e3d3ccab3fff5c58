"""Vector: per-layer directions (llama.cpp's block convention) and the card that says where they came from."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from steerlab.atomic import atomic_write
from steerlab.card import CARD_KEY, Card
from steerlab.errors import SteerlabError


@dataclass
class Vector:
    """Directions keyed by decoder block index; add `scale * directions[N]` to the output of block N."""

    directions: dict[int, torch.Tensor]
    card: Card = field(default_factory=Card)

    def __post_init__(self) -> None:
        if not self.directions:
            raise SteerlabError("a Vector needs at least one layer direction.")
        sizes = {int(t.shape[-1]) for t in self.directions.values()}
        if len(sizes) != 1 or any(t.ndim != 1 for t in self.directions.values()):
            raise SteerlabError(f"every direction must be 1-D and of one size; got sizes {sorted(sizes)}.")
        self.directions = {int(k): v for k, v in sorted(self.directions.items())}
        if not self.card.hidden_size:
            self.card.hidden_size = sizes.pop()

    @property
    def layers(self) -> list[int]:
        return list(self.directions)

    @property
    def hidden_size(self) -> int:
        return int(next(iter(self.directions.values())).shape[0])

    def norms(self) -> dict[int, float]:
        return {layer: float(t.float().norm()) for layer, t in self.directions.items()}

    # ----- algebra: every result is a new Vector whose card says how it was made -----
    def _derived(self, directions: dict[int, torch.Tensor], how: str, layers: list[int] | None = None) -> Vector:
        # A derived vector is not the one that was calibrated (a sum, a sign flip, another scale): it drops the
        # calibration, so card defaults give it scale 1.0. Its recommended layers are `layers` when given (a
        # selection is the caller's choice of layers), else the original ones it still has.
        metadata = {k: v for k, v in self.card.metadata.items() if k != "calibration"}
        kept = layers if layers is not None else [la for la in self.card.recommended_layers if la in directions]
        card = dataclasses.replace(
            self.card,
            norms={},
            metadata={**metadata, "derived": how},
            recommended_layers=list(kept),
            recommended_scale=Card.recommended_scale,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        vec = Vector(directions, card)
        vec.card.norms = vec.norms()
        return vec

    def _combine(self, other: Vector, sign: float, symbol: str) -> Vector:
        if not isinstance(other, Vector):
            return NotImplemented
        if other.hidden_size != self.hidden_size:
            raise SteerlabError(f"cannot combine vectors of hidden size {self.hidden_size} and {other.hidden_size}.")
        layers = sorted(set(self.directions) | set(other.directions))
        out: dict[int, torch.Tensor] = {}
        for layer in layers:
            mine = self.directions.get(layer)
            theirs = other.directions.get(layer)
            if mine is None:
                assert theirs is not None  # the layer came from one of the two
                out[layer] = sign * theirs
            elif theirs is None:
                out[layer] = mine.clone()
            else:
                out[layer] = mine + sign * theirs.to(mine.dtype)
        return self._derived(out, f"({self.card.name or 'a'} {symbol} {other.card.name or 'b'})")

    def __add__(self, other: Vector) -> Vector:
        return self._combine(other, 1.0, "+")

    def __sub__(self, other: Vector) -> Vector:
        return self._combine(other, -1.0, "-")

    def __mul__(self, scale: float) -> Vector:
        if not isinstance(scale, int | float):
            return NotImplemented
        return self._derived({k: v * scale for k, v in self.directions.items()}, f"{scale} * vector")

    __rmul__ = __mul__

    def __neg__(self) -> Vector:
        return self * -1.0

    def normalized(self) -> Vector:
        """Unit norm at every layer."""
        out = {k: v / v.float().norm().clamp_min(1e-12).to(v.dtype) for k, v in self.directions.items()}
        return self._derived(out, "normalized")

    def orthogonalized(self, other: Vector) -> Vector:
        """Remove, layer by layer, the component along `other` (layers `other` lacks are kept as they are)."""
        out = {}
        for layer, v in self.directions.items():
            u = other.directions.get(layer)
            if u is None:
                out[layer] = v.clone()
                continue
            u = u.to(v.dtype)
            denom = torch.dot(u, u).clamp_min(1e-12)
            out[layer] = v - (torch.dot(v, u) / denom) * u
        return self._derived(out, f"orthogonalized against {other.card.name or 'another vector'}")

    def select(self, layers: list[int]) -> Vector:
        missing = [layer for layer in layers if layer not in self.directions]
        if missing:
            raise SteerlabError(f"vector has no direction for layers {missing}; it has {self.layers}.")
        return self._derived({k: self.directions[k] for k in layers}, f"layers {layers}", sorted(layers))

    def content_hash(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    # ----- IO -----
    def to_bytes(self) -> bytes:
        tensors = {f"layer.{k}": v.detach().contiguous().cpu() for k, v in self.directions.items()}
        # One metadata key only: safetensors writes metadata from a hash map, so several keys come out in a
        # random order and the same vector would hash differently from call to call.
        return st_save(tensors, metadata={CARD_KEY: self.card.to_json()})

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Atomic write: a temp file in the same folder, fsynced, then renamed over the target."""
        return atomic_write(Path(path), self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Vector:
        source = Path(path)
        if not source.is_file():
            raise SteerlabError(f"vector file {source} does not exist.")
        return cls.from_bytes(source.read_bytes(), str(source))

    @classmethod
    def from_bytes(cls, data: bytes, origin: str = "bytes") -> Vector:
        """The one way bytes become a Vector (files, store blobs, uploads): safetensors with 'layer.N' tensors and
        the card in the header. `origin` names the source in errors and in the card of a card-less import."""
        try:
            (length,) = struct.unpack("<Q", data[:8])
            header = json.loads(data[8 : 8 + length])
            meta = header.get("__metadata__") or {}
            tensors = st_load(data)
        except Exception as exc:  # struct, json and safetensors raise several unrelated types for corrupt data
            raise SteerlabError(f"{origin} is not a readable safetensors vector: {exc}") from exc
        directions: dict[int, torch.Tensor] = {}
        for key, tensor in tensors.items():
            prefix, _, index = key.partition(".")
            if prefix not in ("layer", "direction") or not index.isdigit():
                raise SteerlabError(f"{origin}: unexpected tensor {key!r}; a vector holds only 'layer.N' tensors.")
            directions[int(index)] = tensor
        card = Card.from_json(meta[CARD_KEY]) if CARD_KEY in meta else Card(metadata={"imported_from": origin})
        return cls(directions, card)

    def check_compatible(self, model: Any) -> None:
        """Raise a clear error when this vector cannot steer `model` (a LoadedModel)."""
        if self.hidden_size != model.hidden_size:
            made_for = f": it was made for {self.card.base_model}" if self.card.base_model else ""
            raise SteerlabError(
                f"vector has hidden size {self.hidden_size}, model {model.name} has {model.hidden_size}{made_for}. "
                "Extract a vector on this model instead."
            )
        too_deep = [layer for layer in self.directions if layer >= model.n_layers or layer < 0]
        if too_deep:
            raise SteerlabError(
                f"vector has directions for layers {too_deep}, "
                f"but model {model.name} has blocks 0..{model.n_layers - 1}."
            )
        fp = self.card.model_fingerprint
        if fp and model.fingerprint and fp != model.fingerprint:
            raise SteerlabError(
                f"vector was made for {self.card.base_model or 'another model'} (fingerprint {fp}), but "
                f"{model.name} has fingerprint {model.fingerprint}: the architectures differ. "
                "Extract a vector on this model, or clear card.model_fingerprint if you know it transfers."
            )
