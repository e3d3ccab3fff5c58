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
from steerlab.card import CARD_KEY, Card, check_fingerprint
from steerlab.errors import SteerlabError
from steerlab.router import n_experts

ROUTER_SITE = "router"


def read_safetensors(data: bytes, origin: str, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and header metadata of a safetensors buffer, or a clear error naming `origin`."""
    try:
        (length,) = struct.unpack("<Q", data[:8])
        meta = json.loads(data[8 : 8 + length]).get("__metadata__") or {}
        return st_load(data), meta
    except Exception as exc:  # struct, json and safetensors raise several unrelated types for corrupt data
        raise SteerlabError(f"{origin} is not a readable safetensors {what}: {exc}") from exc


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
        vec = type(self)(directions, card)
        vec.card.norms = vec.norms()
        return vec

    def _combine(self, other: Vector, sign: float, symbol: str) -> Vector:
        if not isinstance(other, Vector):
            return NotImplemented
        if type(other) is not type(self):
            raise SteerlabError(
                f"cannot combine a {type(self).__name__} with a {type(other).__name__}: put them in one Kit instead."
            )
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
        tensors, meta = read_safetensors(data, origin, "vector")
        directions: dict[int, torch.Tensor] = {}
        for key, tensor in tensors.items():
            prefix, _, index = key.partition(".")
            if prefix not in ("layer", "direction") or not index.isdigit():
                raise SteerlabError(f"{origin}: unexpected tensor {key!r}; a vector holds only 'layer.N' tensors.")
            directions[int(index)] = tensor
        card = Card.from_json(meta[CARD_KEY]) if CARD_KEY in meta else Card(metadata={"imported_from": origin})
        if card.site == ROUTER_SITE:
            return ExpertVector(directions, card)
        if cls is ExpertVector:
            raise SteerlabError(f"{origin} is a residual vector (site {card.site!r}), not an expert vector.")
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
        check_fingerprint(self.card, model)


class ExpertVector(Vector):
    """Per MoE block, one router-logit offset per expert: steering adds `scale * offsets[N]` to block N's router
    logits before the router selects its experts (steerlab.router), so selection and routing weights both follow.

    `directions[N]` holds block N's offsets ([n_experts of that block]); blocks may differ in expert count.
    Saved like a Vector (safetensors, 'layer.N' tensors), its card's site is "router". `extract_experts` makes one
    from contrastive pairs (log-odds of selection), `from_offsets` by hand."""

    def __post_init__(self) -> None:
        if not self.directions:
            raise SteerlabError("an ExpertVector needs offsets for at least one MoE block.")
        if any(t.ndim != 1 or t.numel() < 2 for t in self.directions.values()):
            raise SteerlabError("every block's expert offsets must be a 1-D tensor with one value per expert (>= 2).")
        self.directions = {int(k): v.float() for k, v in sorted(self.directions.items())}
        self.card.site = ROUTER_SITE

    @property
    def offsets(self) -> dict[int, torch.Tensor]:
        return self.directions

    @property
    def hidden_size(self) -> int:
        """The width of the model it was made for (its tensors hold experts, not hidden units)."""
        return int(self.card.hidden_size)

    @classmethod
    def from_offsets(cls, model: Any, offsets: dict[int, dict[int, float]], name: str = "") -> ExpertVector:
        """Offsets by hand, {block: {expert: logit offset}}; experts left out get 0."""
        routers = model.anatomy.routers
        directions = {}
        for layer, by_expert in offsets.items():
            if layer not in routers:
                raise SteerlabError(
                    f"block {layer} of {model.name} has no router; its MoE blocks are {sorted(routers) or 'none'}."
                )
            row = torch.zeros(n_experts(routers[layer], model.hidden_size))
            for expert, value in by_expert.items():
                if not 0 <= int(expert) < row.numel():
                    raise SteerlabError(f"block {layer} has experts 0..{row.numel() - 1}; expert {expert} is not one.")
                row[int(expert)] = float(value)
            directions[int(layer)] = row
        card = Card(
            base_model=model.name,
            model_fingerprint=model.fingerprint,
            hidden_size=model.hidden_size,
            n_layers=model.n_layers,
            method="offsets",
            name=name,
        )
        vector = cls(directions, card)
        vector.card.norms = vector.norms()
        return vector

    def check_compatible(self, model: Any) -> None:
        routers = getattr(getattr(model, "anatomy", None), "routers", None)
        if routers is None:
            raise SteerlabError(
                f"expert vector {self.card.name or ''} steers MoE routers, and {getattr(model, 'name', 'this model')} "
                "comes without steerlab's anatomy (its routers): steer it through a model from steerlab.load_model."
            )
        for layer, row in self.directions.items():
            if layer not in routers:
                raise SteerlabError(
                    f"expert vector {self.card.name or ''} steers the router of block {layer}, but {model.name} has "
                    f"routers at blocks {sorted(routers) or 'none (it is not a Mixture-of-Experts model)'}."
                )
            count = n_experts(routers[layer], model.hidden_size)
            if count != row.numel():
                raise SteerlabError(
                    f"expert vector has {row.numel()} experts at block {layer}, {model.name} has {count} there."
                )
        check_fingerprint(self.card, model, "expert vector")

    def normalized(self) -> Vector:
        raise SteerlabError("expert offsets are logits, not directions: scale them instead of normalising.")

    def orthogonalized(self, other: Vector) -> Vector:
        raise SteerlabError("expert offsets are logits, not directions: they cannot be orthogonalised.")
