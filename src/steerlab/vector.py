"""Vector: per-layer directions (llama.cpp's block convention) and the card that says where they came from."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
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
    def _derived(self, directions: dict[int, torch.Tensor], how: str) -> Vector:
        card = dataclasses.replace(
            self.card,
            norms={},
            metadata={**self.card.metadata, "derived": how},
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
        return self._derived({k: self.directions[k] for k in layers}, f"layers {layers}")

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
        if not source.exists():
            raise SteerlabError(f"vector file {source} does not exist.")
        try:
            with safe_open(str(source), framework="pt") as handle:
                meta = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        except Exception as exc:  # safetensors raises several unrelated types for a corrupt file
            raise SteerlabError(f"{source} is not a readable safetensors file: {exc}") from exc
        return cls._from_parts(tensors, meta, str(source))

    @classmethod
    def _from_parts(cls, tensors: dict[str, torch.Tensor], meta: dict[str, str], origin: str) -> Vector:
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
