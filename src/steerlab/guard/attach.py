"""A refusal audit attached to a store entry: `hub audit REF --attach` files it under the store's root (directly for
a local store, through the server's authenticated audit route for a remote one), keyed by the audited content's
sha256 (so it describes exactly those bytes, whatever version names them), and `hub show` prints its summary.
Torch-free: `hub show` must stay fast."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from steerlab.atomic import atomic_write
from steerlab.errors import SteerlabError

FOLDER = "audits"
MAX_RECORD_BYTES = 1 << 20  # a 32-request audit is ~30 KB; a server keeps no more than this per entry


def check_record(record: Any) -> dict[str, Any]:
    """An audit record as `hub audit` writes it (audit.json): what a store accepts, so `hub show` can print it."""
    if not isinstance(record, dict):
        raise SteerlabError("an audit record is a JSON object: the audit.json that `steerlab hub audit` writes.")
    if len(json.dumps(record)) > MAX_RECORD_BYTES:
        raise SteerlabError(f"the audit record is over {MAX_RECORD_BYTES} bytes; attach the audit.json it wrote.")
    rates, effects = record.get("rates"), record.get("effects") or {}
    problems = [
        "'model' must be a string" if not isinstance(record.get("model"), str) else "",
        "'prompts' must be a list of strings" if not _strings(record.get("prompts")) else "",
        "'rates' must map conditions to [rate, low, high]" if not _triples(rates) else "",
        "'effects' must hold 'vector': [difference, low, high]"
        if not (_triples(effects) and "vector" in effects)
        else "",
    ]
    found = [p for p in problems if p]
    if found:
        raise SteerlabError(f"not an audit record: {'; '.join(found)}. Attach the audit.json `hub audit` wrote.")
    return record


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _triples(value: Any) -> bool:
    """{name: [three finite numbers]}"""
    return isinstance(value, dict) and all(
        isinstance(v, list)
        and len(v) == 3
        and all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in v)
        for v in value.values()
    )


def audit_path(store_root: Path, sha256: str) -> Path:
    return store_root / FOLDER / f"{sha256}.json"


def attach_audit(store_root: Path, sha256: str, record: dict[str, Any]) -> Path:
    return atomic_write(audit_path(store_root, sha256), (json.dumps(record, indent=1) + "\n").encode())


def attached_audit(store_root: Path, sha256: str) -> dict[str, Any] | None:
    path = audit_path(store_root, sha256)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def summary(record: dict[str, Any]) -> str:
    """One line: the refusal rates and the vector's paired effect, as the audit measured them."""
    rates = record.get("rates", {})
    effect = record.get("effects", {}).get("vector", [float("nan")] * 3)
    shown = ", ".join(f"{name} {values[0]:.0%}" for name, values in rates.items())
    n = len(record.get("prompts", []))
    return (
        f"refusal audit on {record.get('model', '?')} ({n} harmful requests): refuses {shown}; "
        f"effect of the vector {effect[0]:+.3f} [{effect[1]:+.3f}, {effect[2]:+.3f}]"
    )
