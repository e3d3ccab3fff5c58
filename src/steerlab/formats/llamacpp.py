"""llama.cpp control-vector GGUF files: export (strict, as llama.cpp loads them) and import (llama.cpp and repeng).

Layer numbering: llama.cpp adds `direction.N` to the output of decoder block N, which is steerlab's convention, so
N maps to block N unchanged. repeng writes the same numbering: its `ControlVector.directions[L]` is read from
`hidden_states[L + 1]` and added to the output of `model.layers[L]` (repeng/extract.py, repeng/control.py).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from steerlab.errors import SteerlabError
from steerlab.kit import KitEntry
from steerlab.vector import ROUTER_SITE, Card, Vector

ARCH = "controlvector"
CARD_FIELD = f"{ARCH}.steerlab_card"  # the full steerlab card as JSON, so a round trip loses nothing
UNIT_TOLERANCE = 1e-3


def is_unit_norm(vector: Vector) -> bool:
    return all(abs(n - 1.0) < UNIT_TOLERANCE for n in vector.norms().values())


def gguf_directions(vector: Vector, layers: list[int] | None = None) -> dict[int, np.ndarray]:
    """The float32 rows llama.cpp accepts: block 0 cannot be steered there, so it is dropped with a warning."""
    chosen = vector.layers if layers is None else sorted(layers)
    missing = [la for la in chosen if la not in vector.directions]
    if missing:
        raise SteerlabError(f"vector has no direction for layers {missing}; it has {vector.layers}.")
    if 0 in chosen:
        warnings.warn(
            "llama.cpp never steers block 0 (it rejects direction.0); the block-0 direction was left out of the GGUF.",
            stacklevel=3,
        )
    rows = {la: vector.directions[la].detach().float().cpu().numpy().astype(np.float32) for la in chosen if la >= 1}
    if not rows:
        raise SteerlabError("nothing to export: llama.cpp steers blocks 1 and up, and the vector only has block 0.")
    return rows


def check_residual(vector: Vector, what: str = "the vector") -> None:
    """Other tools take residual directions only: refuse an expert vector (router-logit offsets) clearly."""
    if vector.card.site == ROUTER_SITE:
        raise SteerlabError(
            f"{what} is an expert vector (router-logit offsets for MoE blocks); llama.cpp control vectors, repeng "
            "and steering-vectors only add residual directions, so they cannot take it. Steer with steerlab."
        )


def export_gguf(
    vector: Vector, path: str | os.PathLike[str], model_hint: str | None = None, layers: list[int] | None = None
) -> Path:
    """Write `vector` as a llama.cpp control vector (`direction.N`, N >= 1, float32, 1-D); returns the path."""
    import gguf

    check_residual(vector)
    target = Path(path)
    if target.suffix != ".gguf":
        raise SteerlabError(f"a llama.cpp control vector is a .gguf file; {target} has another extension.")
    rows = gguf_directions(vector, layers)
    if vector.card.recommended_positions != "all":
        warnings.warn(
            f"the card's scale was calibrated on {vector.card.recommended_positions} tokens only, but llama.cpp steers "
            "every token, the prompt's too: recalibrate with `steerlab calibrate --positions all` before relying on "
            "the recommended scale there.",
            stacklevel=2,
        )
    hint = model_hint or resolve_model_hint(vector)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, ARCH)
        writer.add_string(f"{ARCH}.model_hint", hint)
        writer.add_uint32(f"{ARCH}.layer_count", len(rows))
        _add_provenance(writer, vector)
        for layer, row in rows.items():
            writer.add_tensor(f"direction.{layer}", row)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _add_provenance(writer: object, vector: Vector) -> None:
    """Extra `controlvector.*` keys: llama.cpp and repeng ignore them, people and importers read them."""
    card = vector.card
    strings = {
        "name": card.name,
        "base_model": card.base_model,
        "model_fingerprint": card.model_fingerprint,
        "method": card.method,
        "site": card.site,
        "position": card.position,
        "layer_convention": card.layer_convention,
        "dataset_hash": card.dataset_hash,
        "source": "steerlab",
    }
    for key, value in strings.items():
        if value:
            writer.add_string(f"{ARCH}.{key}", str(value))  # type: ignore[attr-defined]
    writer.add_bool(f"{ARCH}.normalized", is_unit_norm(vector))  # type: ignore[attr-defined]
    writer.add_float32(f"{ARCH}.recommended_scale", float(card.recommended_scale))  # type: ignore[attr-defined]
    writer.add_string(CARD_FIELD, card.to_json())  # type: ignore[attr-defined]


def resolve_model_hint(vector: Vector) -> str:
    """The architecture name repeng needs: the card's record of it, else the local model folder's config."""
    recorded = vector.card.metadata.get("model_type") or vector.card.metadata.get("model_hint")
    if recorded:
        return str(recorded)
    found = _model_type_from_local_config(vector.card.base_model)
    if found:
        return found
    warnings.warn(
        f"could not tell the architecture of {vector.card.base_model or 'the base model'}; wrote model_hint 'unknown'. "
        "Pass model_hint (CLI: --model-hint llama) so repeng can import the file.",
        stacklevel=3,
    )
    return "unknown"


def _model_type_from_local_config(base_model: str) -> str | None:
    from steerlab.models import ALIASES, steerlab_home

    candidates = [Path(base_model)] if base_model else []
    for alias, (_, _, public) in ALIASES.items():
        if base_model in (alias, public):
            candidates.append(steerlab_home() / "models" / alias)
    for folder in candidates:
        config = folder / "config.json"
        if config.is_file():
            model_type = json.loads(config.read_text()).get("model_type")
            if model_type:
                return str(model_type)
    return None


def import_gguf(path: str | os.PathLike[str], source: str = "llama.cpp") -> Vector:
    """Read a llama.cpp / repeng control-vector GGUF; `direction.N` becomes block N (the same numbering)."""
    import gguf

    file = Path(path)
    if not file.is_file():
        raise SteerlabError(f"GGUF file {file} does not exist.")
    try:
        reader = gguf.GGUFReader(str(file))
    except Exception as exc:  # the reader raises ValueError, struct errors, ... for a broken file
        raise SteerlabError(f"{file} is not a readable GGUF file: {exc}") from exc
    fields = _string_fields(reader)
    arch = fields.get("general.architecture")
    if arch != ARCH:
        raise SteerlabError(
            f"{file} is a GGUF of architecture {arch!r}, not a control vector ('{ARCH}'); "
            "pass a control-vector file (written by llama.cpp's cvector-generator, repeng or steerlab)."
        )
    directions = _read_directions(reader, file)
    card = _card_from_fields(reader, fields, file, source)
    vector = Vector(directions, card)
    vector.card.norms = vector.norms()
    return vector


def _read_directions(reader: object, file: Path) -> dict[int, torch.Tensor]:
    directions: dict[int, torch.Tensor] = {}
    for tensor in reader.tensors:  # type: ignore[attr-defined]
        prefix, _, index = tensor.name.partition(".")
        if prefix != "direction" or not index.isdigit():
            raise SteerlabError(f"{file}: unexpected tensor {tensor.name!r}; control vectors hold only direction.N.")
        row = torch.from_numpy(np.array(tensor.data, dtype=np.float32).reshape(-1))
        layer = int(index)
        # llama.cpp sums repeated layers, so an importer must too.
        directions[layer] = directions[layer] + row if layer in directions else row
    if not directions:
        raise SteerlabError(f"{file} holds no direction.N tensors.")
    return directions


def _string_fields(reader: object) -> dict[str, str]:
    out = {}
    for name, field in reader.fields.items():  # type: ignore[attr-defined]
        if field.types and field.types[0] == _gguf_string_type():
            out[name] = bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
    return out


def _scalar_field(reader: object, name: str) -> float | bool | int | None:
    field = reader.fields.get(name)  # type: ignore[attr-defined]
    if field is None or not field.data:
        return None
    return field.parts[field.data[0]].tolist()[0]


def _gguf_string_type() -> object:
    import gguf

    return gguf.GGUFValueType.STRING


def _card_from_fields(reader: object, fields: dict[str, str], file: Path, source: str) -> Card:
    if CARD_FIELD in fields:
        card = Card.from_json(fields[CARD_FIELD])
        card.metadata = {**card.metadata, "imported_from": str(file), "import_format": source}
        return card
    hint = fields.get(f"{ARCH}.model_hint", "")
    scale = _scalar_field(reader, f"{ARCH}.recommended_scale")
    card = Card(
        base_model=fields.get(f"{ARCH}.base_model", ""),
        method=fields.get(f"{ARCH}.method", "") or f"imported ({source})",
        site="residual",
        position=fields.get(f"{ARCH}.position", ""),
        dataset_hash=fields.get(f"{ARCH}.dataset_hash", ""),
        name=fields.get(f"{ARCH}.name", "") or file.stem,
        recommended_scale=float(scale) if isinstance(scale, int | float) else 1.0,
        metadata={
            "imported_from": str(file),
            "import_format": source,
            "model_type": hint,
            "normalized": _scalar_field(reader, f"{ARCH}.normalized"),
        },
    )
    return card


# ----- kits: one GGUF per entry, and the llama.cpp flags that apply them together -----
@dataclass(frozen=True)
class LlamaCppExport:
    files: list[tuple[Path, float]]  # (gguf, scale) per entry
    layer_range: tuple[int, int]  # inclusive, as --control-vector-layer-range takes it

    def flags(self) -> list[str]:
        out: list[str] = []
        for file, scale in self.files:
            out += ["--control-vector-scaled", f"{file}:{scale:g}"]
        return [*out, "--control-vector-layer-range", str(self.layer_range[0]), str(self.layer_range[1])]


def _check_representable(entry: KitEntry, label: str) -> None:
    """llama.cpp only adds, at every token: refuse what it would silently do differently."""
    check_residual(entry.vector, f"entry {label}")
    if entry.when is not None:
        raise SteerlabError(
            f"entry {label} is conditional (when {entry.when.name}); llama.cpp steers every prompt alike and cannot "
            "read a condition. Export the kit without its condition, or serve it with steerlab."
        )
    if entry.mode != "add":
        raise SteerlabError(f"entry {label} uses mode {entry.mode!r}; llama.cpp control vectors can only add.")
    if entry.positions != "all":
        raise SteerlabError(
            f"entry {label} steers only {entry.positions} tokens; llama.cpp steers every token. "
            "Set positions to 'all' before exporting."
        )


def export_entries(
    entries: list[tuple[str, KitEntry]], folder: str | os.PathLike[str], model_hint: str | None = None
) -> LlamaCppExport:
    """Write NAME.gguf per entry (only its active layers: the rest are zeros, so one shared layer range is exact)."""
    out = Path(folder)
    if out.suffix == ".gguf":
        raise SteerlabError(f"a kit exports to a folder (one .gguf per vector), not to the file {out}.")
    for label, entry in entries:
        _check_representable(entry, label)
    files: list[tuple[Path, float]] = []
    used: list[int] = []
    for label, entry in entries:
        layers = [la for la in entry.active_layers() if la >= 1] or entry.active_layers()
        path = export_gguf(entry.vector, out / f"{label}.gguf", model_hint=model_hint, layers=layers)
        files.append((path, float(entry.scale)))
        used += [la for la in layers if la >= 1]
    return LlamaCppExport(files, (min(used), max(used)))
