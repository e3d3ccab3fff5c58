"""The kit document schema, in one place: field names, allowed modes and positions, and the checks.

    {"format": "steerlab.kit", "version": 1,
     "card": {"name": ..., "description": ..., "base_model": ..., "author": ..., "created_at": ...},
     "entries": [{"name": "happy", "vector": "happy.safetensors", "sha256": "<hex>", "scale": 0.4,
                  "layers": [10, 11, 12], "positions": "all", "mode": "add", "pairs": "heldout/happy.jsonl",
                  "when": {"file": "cooking.condition.safetensors", "sha256": "<hex>"}}],
     "when": {"file": ..., "sha256": ...}}

`when` (optional, on the kit or on an entry) names a steerlab.Condition file: the kit (or the entry) steers only
the rows whose prompt the condition holds for. In a store kit it must record the condition's sha256, by which the
condition is found in the store (steerlab.hub.content).

Kit files (steerlab.kitfile) and the store's upload validation (steerlab.hub.validate) both call `check_document`;
the store adds `portable=True`: its kits travel without their folder, so every path must stay inside it.
No torch here: the hub checks uploads with it.
"""

from __future__ import annotations

import math
import re
from pathlib import PurePosixPath
from typing import Any, Literal

from steerlab.errors import SteerlabError

KIT_FORMAT = "steerlab.kit"
KIT_VERSION = 1
SUFFIXES = (".json", ".toml")
MAX_ENTRIES = 256

Mode = Literal["add", "ablate", "add_keep_norm"]
Positions = Literal["all", "prompt", "generated"]
MODES: tuple[str, ...] = ("add", "ablate", "add_keep_norm")
POSITIONS: tuple[str, ...] = ("all", "prompt", "generated")
ENTRY_FIELDS = ("name", "vector", "sha256", "scale", "layers", "positions", "mode", "pairs", "when")
CARD_FIELDS = ("name", "description", "base_model", "author", "created_at")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def check_mode(mode: Any) -> None:
    if mode not in MODES:
        raise SteerlabError(f"unknown steering mode {mode!r}: use one of {', '.join(MODES)}.")


def check_positions(positions: Any) -> None:
    if positions not in POSITIONS:
        raise SteerlabError(f"unknown positions {positions!r}: use one of {', '.join(POSITIONS)}.")


def check_document(document: Any, where: str = "the kit", portable: bool = False) -> dict[str, Any]:
    """Refuse a kit document that does not match the schema; returns it. Entry errors name the entry (1-based)."""
    if not isinstance(document, dict) or document.get("format", KIT_FORMAT) != KIT_FORMAT:
        raise SteerlabError(f"{where} is not a steerlab kit (its 'format' should be '{KIT_FORMAT}').")
    version = document.get("version", KIT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        raise SteerlabError(f"{where}: 'version' must be an integer (this steerlab writes {KIT_VERSION}).")
    if version > KIT_VERSION:
        raise SteerlabError(f"{where} is a version {version} kit; this steerlab reads up to {KIT_VERSION}.")
    entries = document.get("entries")
    if not isinstance(entries, list) or not entries:
        raise SteerlabError(f"{where} has no entries: it needs a non-empty 'entries' list.")
    if len(entries) > MAX_ENTRIES:
        raise SteerlabError(f"{where} has {len(entries)} entries; a kit holds at most {MAX_ENTRIES}.")
    for index, record in enumerate(entries):
        label = record.get("name") if isinstance(record, dict) else None
        entry_where = f"{where}: entry {index + 1}" + (f" ({label})" if label else "")
        check_entry(record, entry_where, portable)
    if "when" in document:
        check_when(document["when"], where, portable)
    card = document.get("card", {})
    if not isinstance(card, dict) or not all(isinstance(v, str | int | float | list | dict) for v in card.values()):
        raise SteerlabError(f"{where}: 'card' must be an object of {', '.join(CARD_FIELDS)}.")
    return document


def check_entry(record: Any, where: str, portable: bool = False) -> None:
    if not isinstance(record, dict):
        raise SteerlabError(f"{where} is not a table/object.")
    scale = record.get("scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
        raise SteerlabError(f"{where}: 'scale' must be a finite number, got {scale!r}.")
    layers = record.get("layers")
    if layers is not None and not (isinstance(layers, list) and all(_is_index(x) for x in layers)):
        raise SteerlabError(f"{where}: 'layers' must be a list of block indices (integers >= 0), got {layers!r}.")
    digest = record.get("sha256")
    if digest is not None and not (isinstance(digest, str) and SHA256_RE.fullmatch(digest)):
        raise SteerlabError(f"{where}: 'sha256' must be 64 lower-case hex characters.")
    for key in ("name", "vector", "pairs"):
        if key in record and not isinstance(record[key], str):
            raise SteerlabError(f"{where}: '{key}' must be a string.")
        if portable and key in ("vector", "pairs") and key in record and not _inside(record[key]):
            raise SteerlabError(f"{where}: '{key}' must be a relative path inside the kit's folder (no '..').")
    try:
        check_mode(record.get("mode", "add"))
        check_positions(record.get("positions", "all"))
    except SteerlabError as exc:
        raise SteerlabError(f"{where}: {exc}") from exc
    if not record.get("vector") and not record.get("sha256"):
        raise SteerlabError(f"{where} names no vector: give 'vector' (a path) and/or 'sha256'.")
    if "when" in record:
        check_when(record["when"], where, portable)


def check_when(value: Any, where: str, portable: bool = False) -> None:
    """'when': {"file": PATH of a condition file, "sha256": its hash (optional)}."""
    if not isinstance(value, dict) or not isinstance(value.get("file"), str) or not value["file"]:
        raise SteerlabError(
            f"{where}: 'when' must be an object {{\"file\": CONDITION_FILE, \"sha256\": HASH}} naming a condition file."
        )
    unknown = sorted(set(value) - {"file", "sha256"})
    if unknown:
        raise SteerlabError(f"{where}: 'when' has unknown fields {unknown}; it takes 'file' and 'sha256'.")
    digest = value.get("sha256")
    if digest is not None and not (isinstance(digest, str) and SHA256_RE.fullmatch(digest)):
        raise SteerlabError(f"{where}: 'when.sha256' must be 64 lower-case hex characters.")
    if portable and not _inside(value["file"]):
        raise SteerlabError(f"{where}: 'when.file' must be a relative path inside the kit's folder (no '..').")
    if portable and digest is None:
        raise SteerlabError(
            f"{where}: 'when' records no sha256; a store kit finds its conditions by hash (`steerlab kit new` "
            "records it)."
        )


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _inside(value: str) -> bool:
    if not value or "\\" in value or "\x00" in value:
        return False
    path = PurePosixPath(value)
    return not path.is_absolute() and ".." not in path.parts
