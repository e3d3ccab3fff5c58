"""Per-request condition records, from vLLM's workers back to `steerlab serve --engine vllm` for its audit log.

vLLM carries nothing of ours from a worker to the process that sent the request, so the record goes through a
folder both can see. The server names each conditional request's record (a fresh id of 32 hex digits, in the
request's extra_args under RECORD_KEY) and points every vLLM process at the folder (STEERLAB_VLLM_RECORDS). The
worker of the first tensor-parallel rank writes the record once the request's conditions are decided, at the end of
the step that computed the prompt's last token: before the step's output, whose first generated token the server
waits for, leaves the worker. The server takes the record (reads and deletes it) when that first token arrives.

Nothing is written unless the folder is set, and only under a name of exactly 32 hex digits: a client of plain
`vllm serve` can put anything into extra_args, and a name must never become a path.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

RECORD_KEY = "steerlab_record"
_NAME = re.compile(r"[0-9a-f]{32}")


def record_name(extra_args: dict[str, Any] | None) -> str | None:
    """The record a request asked for, when its name is one the server could have made (else None)."""
    name = (extra_args or {}).get(RECORD_KEY)
    return name if isinstance(name, str) and _NAME.fullmatch(name) else None


def write_record(folder: str | Path, name: str, conditions: list[dict[str, Any]]) -> None:
    """Written whole or not at all (a temporary file renamed): the server must never read half a record."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a record name: {name!r}")
    path = Path(folder) / f"{name}.json"
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(conditions))
    os.replace(partial, path)


def take_record(folder: str | Path, name: str) -> list[dict[str, Any]] | None:
    """The record's conditions, removed from the folder; None when the worker wrote none."""
    path = Path(folder) / f"{name}.json"
    try:
        conditions = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    path.unlink(missing_ok=True)
    return list(conditions)
