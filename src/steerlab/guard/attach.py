"""A refusal audit attached to a store entry: `hub audit REF --attach` files it under the local store, keyed by the
audited content's sha256 (so it describes exactly those bytes, whatever version names them), and `hub show` prints
its summary. Torch-free: `hub show` must stay fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from steerlab.atomic import atomic_write

FOLDER = "audits"


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
