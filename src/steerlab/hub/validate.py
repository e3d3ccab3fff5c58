"""What an upload must pass before a byte of it is stored: format, dtypes, shapes, finiteness, size, card schema."""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import typing
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from steerlab.card import (
    CARD_KEY,
    CONDITION_READINGS,
    CONDITION_SITE,
    CONDITION_TENSOR,
    FORMAT_VERSION,
    LAYER_CONVENTION,
    Card,
)
from steerlab.errors import SteerlabError
from steerlab.kitschema import check_document

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MAX_HEADER_BYTES = 4 * 1024 * 1024
FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
KINDS = ("vector", "kit", "condition")


# Where the card's JSON form differs from the Card dataclass: layer keys are strings, and a whole-number scale may be
# written as an int. Every other field takes its type and default from Card, so a field added there is checked here.
_JSON_TYPES: dict[str, Any] = {
    "norms": dict[str, float],
    "diagnostics": dict[str, dict[str, float]],
    "recommended_scale": float | int,
}
_REQUIRED = ("hidden_size",)


def _card_schema() -> type[BaseModel]:
    hints = typing.get_type_hints(Card)
    fields: dict[str, Any] = {}
    for spec in dataclasses.fields(Card):
        kind = _JSON_TYPES.get(spec.name, hints[spec.name])
        if spec.name in _REQUIRED:
            fields[spec.name] = (kind, ...)
        elif spec.default is not dataclasses.MISSING:
            fields[spec.name] = (kind, spec.default)
        else:
            fields[spec.name] = (kind, Field(default_factory=typing.cast(Any, spec.default_factory)))
    return create_model("CardSchema", __config__=ConfigDict(extra="allow", strict=True), **fields)


CardSchema = _card_schema()


@dataclass
class Checked:
    """What the catalogue indexes about one upload, all taken from its own content."""

    kind: str
    card: dict[str, Any]
    base_model: str = ""
    fingerprint: str = ""
    hidden_size: int = 0
    n_layers: int = 0
    max_layer: int = -1
    description: str = ""
    license: str = ""
    author: str = ""
    created_at: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


def check_upload(data: bytes, kind: str, max_bytes: int = DEFAULT_MAX_BYTES) -> Checked:
    if kind not in KINDS:
        raise SteerlabError(f"unknown kind {kind!r}: use one of {', '.join(KINDS)}.")
    if len(data) > max_bytes:
        raise SteerlabError(f"upload is {len(data)} bytes, over the limit of {max_bytes} bytes.")
    if kind == "condition":
        return check_condition(data)
    return check_vector(data) if kind == "vector" else check_kit(data)


def _strict_json(text: str | bytes, what: str) -> Any:
    def refuse(constant: str) -> None:
        raise SteerlabError(f"{what} contains {constant}; only finite numbers are allowed.")

    try:
        return json.loads(text, parse_constant=refuse)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SteerlabError(f"{what} is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # the parser recurses per nesting level; a hostile file nests thousands deep
        raise SteerlabError(f"{what} is nested too deeply to be a steerlab file; flatten it.") from exc


def _is_index(text: str) -> bool:
    # str.isdigit also accepts '²' and other scripts' digits, which int() then refuses or reads as another layer
    return text.isascii() and text.isdigit()


def read_header(data: bytes) -> tuple[dict[str, Any], dict[str, str]]:
    """The safetensors header, parsed by hand so that nothing is allocated from an untrusted length."""
    if len(data) < 8:
        raise SteerlabError("not a safetensors file: it is shorter than the 8-byte header length.")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        raise SteerlabError(f"not a safetensors file: its header claims {length} bytes, more than the file holds.")
    if length > MAX_HEADER_BYTES:
        raise SteerlabError(
            f"the safetensors header is {length} bytes, over the limit of {MAX_HEADER_BYTES}: the card is too large "
            "(keep long texts and data out of it)."
        )
    header = _strict_json(data[8 : 8 + length], "the safetensors header")
    if not isinstance(header, dict):
        raise SteerlabError("not a safetensors file: its header is not a JSON object.")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise SteerlabError("the safetensors metadata must map strings to strings.")
    return header, meta


def check_card(card: Any) -> dict[str, Any]:
    if not isinstance(card, dict):
        raise SteerlabError("the card must be a JSON object.")
    try:
        parsed = CardSchema.model_validate(card).model_dump()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise SteerlabError(f"the card does not match its schema: {problems}.") from exc
    unknown = sorted(set(card) - {f.name for f in dataclasses.fields(Card)})
    if unknown:
        raise SteerlabError(f"the card has unknown fields {unknown}; remove them or put them under 'metadata'.")
    if parsed["hidden_size"] <= 0 or parsed["n_layers"] < 0:
        raise SteerlabError("card.hidden_size must be positive and card.n_layers non-negative.")
    if parsed["layer_convention"] != LAYER_CONVENTION:
        convention = parsed["layer_convention"]
        raise SteerlabError(f"card.layer_convention is {convention!r}; the store holds {LAYER_CONVENTION!r}.")
    if parsed["format_version"] > FORMAT_VERSION:
        raise SteerlabError(f"card format_version {parsed['format_version']} is newer than this steerlab understands.")
    if not math.isfinite(float(parsed["recommended_scale"])):
        raise SteerlabError("card.recommended_scale must be finite.")
    for per_layer in ("norms", "diagnostics"):
        bad = sorted(key for key in parsed[per_layer] if not _is_index(key))
        if bad:
            raise SteerlabError(f"card.{per_layer} has keys {bad[:5]} that are not layer indices (0, 1, 2, ...).")
    return card


def check_vector(data: bytes) -> Checked:
    header, meta = read_header(data)
    if CARD_KEY not in meta:
        raise SteerlabError(f"the vector has no card (metadata key {CARD_KEY!r}); save it with steerlab's Vector.save.")
    card = check_card(_strict_json(meta[CARD_KEY], "the card"))
    layers = _check_tensor_specs(header, card["hidden_size"], card.get("n_layers", 0), card.get("site") == "router")
    _check_values(data)
    missing = sorted(set(card.get("recommended_layers", [])) - set(layers))
    if missing:
        raise SteerlabError(f"card.recommended_layers {missing} have no direction in the file.")
    return _from_card("vector", card, max(layers), vector_metrics(card))


def _from_card(kind: str, card: dict[str, Any], max_layer: int, metrics: dict[str, Any] | None = None) -> Checked:
    """What the catalogue indexes about a safetensors upload (a vector or a condition), from its checked card."""
    return Checked(
        kind=kind,
        card=card,
        base_model=card.get("base_model", ""),
        fingerprint=card.get("model_fingerprint", ""),
        hidden_size=card["hidden_size"],
        n_layers=card.get("n_layers", 0),
        max_layer=max_layer,
        description=card.get("description", ""),
        license=card.get("license", ""),
        author=card.get("author", ""),
        created_at=card.get("created_at", ""),
        metrics=metrics or {},
    )


def check_condition(data: bytes) -> Checked:
    """A condition file: one float `condition.direction` of the card's hidden size, and a card with site
    "condition" whose metadata.condition gives the block it reads, its threshold and its reading."""
    header, meta = read_header(data)
    if CARD_KEY not in meta:
        raise SteerlabError(f"the condition has no card (metadata key {CARD_KEY!r}); save it with Condition.save.")
    card = check_card(_strict_json(meta[CARD_KEY], "the card"))
    if card.get("site") != CONDITION_SITE:
        raise SteerlabError(
            f"the file's card has site {card.get('site')!r}, not {CONDITION_SITE!r}: it is not a condition (push a "
            "vector as a vector)."
        )
    layer = _condition_layer(card.get("metadata", {}).get("condition"), card.get("n_layers", 0))
    spec = header.get(CONDITION_TENSOR)
    if set(header) != {CONDITION_TENSOR} or not isinstance(spec, dict):
        names = sorted(header)
        raise SteerlabError(f"a condition holds exactly one tensor, {CONDITION_TENSOR!r}; this file has {names}.")
    if spec.get("dtype") not in FLOAT_DTYPES:
        raise SteerlabError(f"the condition's direction has dtype {spec.get('dtype')}; use a float dtype.")
    if spec.get("shape") != [card["hidden_size"]]:
        raise SteerlabError(
            f"the condition's direction has shape {spec.get('shape')}, but the card says hidden size "
            f"{card['hidden_size']}."
        )
    _check_values(data)
    return _from_card("condition", card, layer)


def _condition_layer(settings: Any, n_layers: int) -> int:
    """The block metadata.condition reads, after checking its threshold and reading."""
    if not isinstance(settings, dict):
        raise SteerlabError("the condition's card has no metadata.condition {layer, threshold, reading}.")
    layer, threshold, reading = settings.get("layer"), settings.get("threshold"), settings.get("reading")
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0 or (n_layers and layer >= n_layers):
        raise SteerlabError(f"metadata.condition.layer must be a block index below card.n_layers, got {layer!r}.")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
        raise SteerlabError(f"metadata.condition.threshold must be a finite number, got {threshold!r}.")
    if reading not in CONDITION_READINGS:
        allowed = ", ".join(CONDITION_READINGS)
        raise SteerlabError(f"metadata.condition.reading must be one of {allowed}, got {reading!r}.")
    return layer


def _check_tensor_specs(header: dict[str, Any], hidden: int, n_layers: int, router: bool = False) -> list[int]:
    """`router`: an expert vector (card site "router"), whose tensors hold one logit offset per expert."""
    if not header:
        raise SteerlabError("the vector holds no tensors; it needs at least one 'layer.N' direction.")
    layers = []
    for key, spec in header.items():
        prefix, _, index = key.partition(".")
        if prefix != "layer" or not _is_index(index) or not isinstance(spec, dict):
            raise SteerlabError(f"unexpected tensor {key!r}: a vector holds only 'layer.N' tensors.")
        if spec.get("dtype") not in FLOAT_DTYPES:
            raise SteerlabError(f"tensor {key} has dtype {spec.get('dtype')}; use a float dtype (F16, BF16, F32, F64).")
        shape = spec.get("shape")
        if router and not (isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int) and shape[0] >= 2):
            raise SteerlabError(f"tensor {key} has shape {shape}; an expert vector holds one offset per expert (>= 2).")
        if not router and shape != [hidden]:
            raise SteerlabError(f"tensor {key} has shape {shape}, but the card says hidden size {hidden}.")
        if n_layers and int(index) >= n_layers:
            raise SteerlabError(f"tensor {key} is beyond the card's {n_layers} layers.")
        layers.append(int(index))
    return layers


def _check_values(data: bytes) -> None:
    # safetensors parses the raw buffers and numpy checks them, so that upload, pull and verify never import torch.
    from safetensors import deserialize

    try:
        tensors = deserialize(data)
    except Exception as exc:  # safetensors raises several unrelated types for a corrupt buffer
        raise SteerlabError(f"the safetensors file does not parse: {exc}") from exc
    for key, spec in tensors:
        if not _all_finite(spec["data"], spec["dtype"]):
            raise SteerlabError(f"tensor {key} contains NaN or infinite values.")


def _all_finite(buffer: bytes | bytearray, dtype: str) -> bool:
    import numpy as np

    if dtype == "BF16":  # numpy has no bfloat16; its bits are the top half of a float32, so widen them exactly
        values = (np.frombuffer(buffer, "<u2").astype("<u4") << 16).view("<f4")
    else:
        values = np.frombuffer(buffer, {"F16": "<f2", "F32": "<f4", "F64": "<f8"}[dtype])
    return bool(np.isfinite(values).all())


def vector_metrics(card: dict[str, Any]) -> dict[str, Any]:
    """The measured effect for listings: the card's `metadata.effect` if any, else its best extraction diagnostics."""
    effect = card.get("metadata", {}).get("effect")
    if isinstance(effect, dict):
        return effect
    diagnostics = card.get("diagnostics") or {}
    if not diagnostics:
        return {}
    best = max(diagnostics, key=lambda k: (diagnostics[k].get("accuracy", 0.0), diagnostics[k].get("separation", 0.0)))
    return {"source": "extraction diagnostics", "best_layer": int(best), **diagnostics[best]}


def check_kit(data: bytes) -> Checked:
    """A kit file (JSON) as steerlab.kitschema defines it, with every path inside the kit's folder."""
    kit = check_document(_strict_json(data, "the kit file"), "the kit file", portable=True)
    card = kit.get("card", {})
    return Checked(
        kind="kit",
        card=card,
        base_model=str(card.get("base_model", "")),
        description=str(card.get("description", "")),
        author=str(card.get("author", "")),
        license=str(card.get("license", "")),
        created_at=str(card.get("created_at", "")),
    )
