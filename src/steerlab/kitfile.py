"""Kit files: one readable JSON (or TOML) file naming each vector by relative path and sha256, tamper-evident.

The document's schema (fields, modes, positions and their checks) is steerlab.kitschema's. `sha256` is the hash
of the vector file's bytes (= `Vector.content_hash()` when steerlab wrote it). Paths are relative
to the kit file; a vector whose path is gone is looked up by hash among `*.safetensors` beside the kit. `pairs`
(optional) names held-out contrastive pairs for `steerlab interfere`. `when` (on the kit or an entry) names a
condition file (steerlab.Condition) by relative path and sha256, checked the same way as vectors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from steerlab.condition import Condition
from steerlab.errors import SteerlabError
from steerlab.kit import EntrySource, Kit, KitCard, KitEntry
from steerlab.kitschema import KIT_FORMAT, KIT_VERSION, SUFFIXES, check_document
from steerlab.vector import Vector


# ----- hashing and lookup -----
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _find_by_hash(folder: Path, sha256: str) -> Path | None:
    for candidate in sorted(folder.glob("*.safetensors")):
        if file_sha256(candidate) == sha256:
            return candidate
    return None


def entry_names(kit: Kit) -> list[str]:
    """A unique, human name per entry: the vector's card name (or 'axisN'), suffixed when repeated."""
    names: list[str] = []
    for i, entry in enumerate(kit.entries):
        base = _safe_name(entry.vector.card.name) or f"axis{i + 1}"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text.strip()).strip("-.")


# ----- saving -----
def save_kit(
    kit: Kit,
    path: str | os.PathLike[str],
    vector_files: Sequence[str | os.PathLike[str] | None] | None = None,
    pairs: Mapping[str, str | os.PathLike[str]] | None = None,
    names: Sequence[str] | None = None,
    when_file: str | os.PathLike[str] | None = None,
) -> Path:
    """Write `kit` to PATH (.json or .toml); returns the path.

    Conditions (the kit's, `when_file` if it is already on disk, and the entries') are referenced by path and hash;
    one not on disk beside the kit is written there as NAME.condition.safetensors.

    `vector_files[i]`: an existing file holding entry i's vector (referenced, not copied). Entries without one are
    referenced by the `*.safetensors` file beside the kit with the same hash, or written there as NAME.safetensors.
    `pairs`: entry name -> held-out pair file, recorded for `steerlab interfere`.
    """
    target = _kit_path(Path(path))
    folder = target.parent.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    labels = list(names) if names is not None else entry_names(kit)
    files = list(vector_files) if vector_files is not None else [None] * len(kit.entries)
    if len(files) != len(kit.entries) or len(labels) != len(kit.entries):
        raise SteerlabError(f"the kit has {len(kit.entries)} entries; give one vector file and name per entry.")
    unknown = sorted(set(pairs or {}) - set(labels))
    if unknown:
        raise SteerlabError(f"pairs were given for {unknown}, which are not entries of the kit ({', '.join(labels)}).")
    records = []
    for entry, label, given in zip(kit.entries, labels, files, strict=True):
        file = _vector_file(entry.vector, label, Path(given) if given is not None else None, folder)
        record: dict[str, Any] = {
            "name": label,
            "vector": _relative(file, folder),
            "sha256": file_sha256(file),
            "scale": float(entry.scale),
            "layers": list(entry.layers) if entry.layers is not None else None,
            "positions": entry.positions,
            "mode": entry.mode,
        }
        if pairs and label in pairs:
            record["pairs"] = _relative(Path(pairs[label]).resolve(), folder)
        if entry.when is not None:
            record["when"] = _condition_record(entry.when, None, folder)
        records.append(record)
    document: dict[str, Any] = {"format": KIT_FORMAT, "version": KIT_VERSION}
    if kit.condition is not None:
        document["when"] = _condition_record(kit.condition, Path(when_file) if when_file else None, folder)
    document.update(card=_card_dict(kit, labels), entries=records)
    text = json.dumps(document, indent=2) + "\n" if target.suffix == ".json" else _to_toml(document)
    _atomic_write(target, text)
    return target


def _kit_path(path: Path) -> Path:
    if path.suffix not in SUFFIXES:
        raise SteerlabError(f"a kit file is NAME.json (or NAME.toml); {path} has another extension.")
    return path


def _card_dict(kit: Kit, labels: list[str]) -> dict[str, str]:
    card = dataclasses.asdict(kit.card)
    if not card["base_model"]:
        card["base_model"] = next((e.vector.card.base_model for e in kit.entries if e.vector.card.base_model), "")
    if not card["name"]:
        card["name"] = "+".join(labels)
    return card


def _vector_file(vector: Vector, label: str, given: Path | None, folder: Path) -> Path:
    if given is not None:
        if not given.is_file():
            raise SteerlabError(f"entry {label}: vector file {given} does not exist.")
        on_disk = Vector.load(given)
        if not _same_directions(on_disk, vector):
            raise SteerlabError(f"entry {label}: the vector in memory differs from {given}; save it to a new file.")
        return given.resolve()
    found = _find_same(folder, vector)
    if found is not None:
        return found
    name = _safe_name(label) or "vector"
    target = folder / f"{name}.safetensors"
    n = 2
    while target.exists():
        target, n = folder / f"{name}-{n}.safetensors", n + 1
    return vector.save(target).resolve()


def _condition_record(condition: Condition, given: Path | None, folder: Path) -> dict[str, str]:
    file = given.resolve() if given is not None else _find_condition(folder, condition)
    if given is not None and Condition.load(given).key != condition.key:
        raise SteerlabError(f"the condition in memory differs from {given}; save it to a new file.")
    if file is None:
        name = _safe_name(condition.card.name) or "condition"
        file = folder / f"{name}.condition.safetensors"
        n = 2
        while file.exists():
            file, n = folder / f"{name}-{n}.condition.safetensors", n + 1
        condition.save(file)
    return {"file": _relative(file, folder), "sha256": file_sha256(file)}


def _find_condition(folder: Path, condition: Condition) -> Path | None:
    for candidate in sorted(folder.glob("*.safetensors")):
        try:
            if Condition.load(candidate).key == condition.key:
                return candidate.resolve()
        except SteerlabError:
            continue
    return None


def _find_same(folder: Path, vector: Vector) -> Path | None:
    """A file beside the kit holding this very vector (same directions and card).

    Compared by content rather than by `vector.content_hash()`: safetensors writes its metadata keys in no fixed
    order, so two serialisations of one vector can hash differently.
    """
    card = vector.card.to_json()
    for candidate in sorted(folder.glob("*.safetensors")):
        try:
            other = Vector.load(candidate)
        except SteerlabError:
            continue
        if other.card.to_json() == card and _same_directions(other, vector):
            return candidate
    return None


def _same_directions(a: Vector, b: Vector) -> bool:
    if a.layers != b.layers:
        return False
    return all(torch.equal(a.directions[k].float(), b.directions[k].float()) for k in a.layers)


def _relative(file: Path, folder: Path) -> str:
    return Path(os.path.relpath(file, folder)).as_posix()


def _atomic_write(target: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def _to_toml(document: dict[str, Any]) -> str:
    """The kit document as TOML; None (no layer restriction) is written by leaving the key out."""
    lines = [f"format = {_toml_value(document['format'])}", f"version = {document['version']}"]
    lines += [f"when = {_toml_value(document['when'])}"] if "when" in document else []
    lines += ["", "[card]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in document["card"].items()]
    for record in document["entries"]:
        lines += ["", "[[entries]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in record.items() if v is not None]
    return "\n".join(lines) + "\n"


# ----- loading -----
def resolve_kit_path(path: str | os.PathLike[str]) -> Path:
    """PATH itself, or NAME resolved to NAME.json / NAME.toml."""
    given = Path(path)
    if given.is_file():
        return given
    if given.suffix not in SUFFIXES:
        for suffix in SUFFIXES:
            if given.with_name(given.name + suffix).is_file():
                return given.with_name(given.name + suffix)
    raise SteerlabError(f"kit file {given} does not exist (write one with `steerlab kit new`).")


def read_document(path: Path) -> dict[str, Any]:
    try:
        if path.suffix == ".toml":
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        else:
            document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SteerlabError(f"kit file {path} is not valid {path.suffix[1:].upper()}: {exc}") from exc
    return check_document(document, f"kit file {path}")


def load_kit(path: str | os.PathLike[str], model: Any = None) -> Kit:
    """Read a kit; refuses missing, changed (hash mismatch) or, when `model` is given, incompatible vectors."""
    return load_kit_with_info(path, model)[0]


def load_kit_with_info(path: str | os.PathLike[str], model: Any = None) -> tuple[Kit, list[EntrySource]]:
    """The kit and, per entry, its name, vector file, hash and held-out pair file."""
    file = resolve_kit_path(path)
    document = read_document(file)
    folder = file.parent.resolve()
    entries, infos = [], []
    for index, record in enumerate(document["entries"]):
        label = str(record.get("name") or f"entry {index + 1}")
        where = f"{file}: entry {index + 1} ({label})"
        vector_file, digest = _resolve_vector(record, folder, where)
        vector = _load_vector(vector_file, where)
        if model is not None:
            try:
                vector.check_compatible(model)
            except SteerlabError as exc:
                raise SteerlabError(f"{where}: {exc}") from exc
        when = _load_condition(record["when"], folder, where, model) if "when" in record else None
        entries.append(entry_from_record(record, vector, where, when))
        pairs = folder / record["pairs"] if record.get("pairs") else None
        infos.append(EntrySource(label, digest, str(vector_file), vector_file, pairs))
    condition = _load_condition(document["when"], folder, str(file), model) if "when" in document else None
    return Kit(entries, card_from_document(document.get("card") or {}, file.stem), condition), infos


def _load_condition(record: dict[str, Any], folder: Path, where: str, model: Any) -> Condition:
    path = (folder / str(record["file"])).resolve()
    if not path.is_file():
        raise SteerlabError(f"{where}: condition file {path} does not exist.")
    actual, expected = file_sha256(path), record.get("sha256")
    if expected and actual != expected:
        raise SteerlabError(
            f"{where}: condition file {path} has changed (sha256 {actual[:12]}…, the kit expects "
            f"{str(expected)[:12]}…). Restore the original file, or rebuild the kit with `steerlab kit new`."
        )
    try:
        condition = Condition.load(path)
        if model is not None:
            condition.check_compatible(model)
    except SteerlabError as exc:
        raise SteerlabError(f"{where}: {exc}") from exc
    return condition


def _resolve_vector(record: dict[str, Any], folder: Path, where: str) -> tuple[Path, str]:
    rel, expected = record.get("vector"), record.get("sha256")
    if rel:
        candidate = (folder / str(rel)).resolve()
        if candidate.is_file():
            actual = file_sha256(candidate)
            if expected and actual != expected:
                raise SteerlabError(
                    f"{where}: vector file {candidate} has changed (sha256 {actual[:12]}…, the kit expects "
                    f"{str(expected)[:12]}…). Restore the original file, or rebuild the kit with `steerlab kit new`."
                )
            return candidate, actual
    if expected:
        found = _find_by_hash(folder, str(expected))
        if found is not None:
            return found.resolve(), str(expected)
    missing = f"file {rel}" if rel else "no file"
    by_hash = f", and no *.safetensors in {folder} has sha256 {str(expected)[:12]}…" if expected else ""
    raise SteerlabError(f"{where}: vector is missing ({missing} not found{by_hash}).")


def _load_vector(file: Path, where: str) -> Vector:
    try:
        return Vector.load(file)
    except SteerlabError as exc:
        raise SteerlabError(f"{where}: {exc}") from exc


def entry_from_record(record: dict[str, Any], vector: Vector, where: str, when: Condition | None = None) -> KitEntry:
    """The schema was checked on reading; what is left is whether the vector has the layers the entry names."""
    try:
        return KitEntry(
            vector,
            scale=float(record.get("scale", 1.0)),
            layers=record.get("layers"),
            positions=record.get("positions", "all"),
            mode=record.get("mode", "add"),
            when=when,
        )
    except SteerlabError as exc:
        raise SteerlabError(f"{where}: {exc}") from exc


def card_from_document(raw: dict[str, Any], default_name: str) -> KitCard:
    """The kit's card from its document (unknown fields are ignored); a card without a name takes `default_name`."""
    known = {f.name for f in dataclasses.fields(KitCard)}
    card = KitCard(**{k: str(v) for k, v in raw.items() if k in known})
    if not card.name:
        card.name = default_name
    return card
