"""The API-key file of `steerlab serve --api-keys FILE`: one entry per principal, holding only its key's hash.

Keys are 256-bit random secrets, so one sha256 is enough to store them (a slow password hash protects guessable
secrets; nothing guesses 2^256). Each entry says what its holder may steer with (shell-style patterns over names:
`happy`, `mood` (a kit and its axes), `starter/*` (a store namespace), `*` (anything)), the largest |scale| it may
use, and how many requests it may make per period.

    {"format": "steerlab-api-keys/1",
     "keys": [{"id": "alice", "sha256": "...", "allow": ["starter/*", "mood"], "max_scale": 2.0, "rate": "60/min"}]}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from steerlab.atomic import atomic_write
from steerlab.errors import SteerlabError

FORMAT = "steerlab-api-keys/1"
PREFIX = "slk_"
_PERIODS = {"s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0, "hour": 3600.0, "day": 86400.0}
_RATE = re.compile(r"^(\d+)/(s|sec|min|h|hour|day)$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


@dataclass(frozen=True)
class Rate:
    """At most `count` requests per `period_s` seconds (a token bucket that refills continuously)."""

    count: int
    period_s: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        match = _RATE.fullmatch(text.strip())
        if match is None or int(match[1]) < 1:
            raise SteerlabError(
                f"cannot read rate {text!r}: write COUNT/PERIOD with PERIOD s, min, hour or day (60/min)."
            )
        return cls(int(match[1]), _PERIODS[match[2]])

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "min", 3600.0: "hour", 86400.0: "day"}[self.period_s]
        return f"{self.count}/{unit}"


@dataclass(frozen=True)
class ApiKey:
    id: str
    sha256: str
    allow: tuple[str, ...] = ("*",)
    max_scale: float | None = None  # None: the server's cap
    rate: Rate | None = None  # None: no limit
    created_at: str = ""

    def record(self) -> dict[str, Any]:
        record = asdict(self)
        record["allow"], record["rate"] = list(self.allow), str(self.rate) if self.rate else None
        return record


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def load_keys(path: Path) -> list[ApiKey]:
    """Every key in the file; a malformed file is an error naming the entry and the field."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SteerlabError(
            f"--api-keys {path}: cannot read it as JSON ({exc}); make it with `steerlab serve keygen`."
        ) from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT or not isinstance(document.get("keys"), list):
        raise SteerlabError(f"--api-keys {path}: not a key file (it needs format {FORMAT!r} and a list of keys).")
    keys = [_entry(path, index, record) for index, record in enumerate(document["keys"])]
    ids = [key.id for key in keys]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise SteerlabError(f"--api-keys {path}: the ids {dupes} appear more than once; each principal has one key.")
    return keys


def _entry(path: Path, index: int, record: Any) -> ApiKey:
    where = f"--api-keys {path}: keys[{index}]"
    if not isinstance(record, dict):
        raise SteerlabError(f"{where} is not an object.")
    try:
        key_id, digest = str(record["id"]), str(record["sha256"])
        allow = record.get("allow", ["*"])
        max_scale = record.get("max_scale")
        rate = record.get("rate")
    except KeyError as exc:
        raise SteerlabError(f"{where} has no {exc.args[0]!r}.") from exc
    if not _ID.fullmatch(key_id) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise SteerlabError(f"{where}: id must be a short name and sha256 64 hex digits (got {key_id!r}).")
    if not isinstance(allow, list) or not all(isinstance(a, str) and a for a in allow):
        raise SteerlabError(f"{where}: allow must be a list of name patterns such as ['starter/*', 'mood'].")
    if max_scale is not None and not (isinstance(max_scale, int | float) and max_scale >= 0):
        raise SteerlabError(f"{where}: max_scale must be a number >= 0 (or absent for the server's cap).")
    return ApiKey(
        key_id,
        digest,
        tuple(allow),
        None if max_scale is None else float(max_scale),
        Rate.parse(str(rate)) if rate else None,
        str(record.get("created_at") or ""),
    )


def add_key(
    path: Path, key_id: str, allow: list[str], max_scale: float | None = None, rate: str | None = None
) -> tuple[ApiKey, str]:
    """Append a new key to the file (created if missing) and return it with its secret, which is stored nowhere."""
    keys = load_keys(path) if path.exists() else []
    if any(key.id == key_id for key in keys):
        raise SteerlabError(f"{path} already has a key for {key_id!r}; pick another id or remove that entry first.")
    secret = PREFIX + secrets.token_urlsafe(32)
    key = _entry(
        path,
        len(keys),
        {"id": key_id, "sha256": hash_secret(secret), "allow": allow or ["*"], "max_scale": max_scale, "rate": rate},
    )
    key = dataclasses.replace(key, created_at=datetime.now(UTC).isoformat(timespec="seconds"))
    document = {"format": FORMAT, "keys": [k.record() for k in [*keys, key]]}
    atomic_write(path, (json.dumps(document, indent=1) + "\n").encode())
    os.chmod(path, 0o600)  # hashes only, but nobody else needs to read who may steer what
    return key, secret


def remove_key(path: Path, key_id: str) -> ApiKey:
    """Take `key_id`'s entry out of the file (atomically): a running server refuses the key from its next request."""
    keys = load_keys(path)
    gone = [key for key in keys if key.id == key_id]
    if not gone:
        raise SteerlabError(f"{path} has no key {key_id!r}; it holds {', '.join(k.id for k in keys) or 'none'}.")
    document = {"format": FORMAT, "keys": [k.record() for k in keys if k.id != key_id]}
    atomic_write(path, (json.dumps(document, indent=1) + "\n").encode())
    os.chmod(path, 0o600)
    return gone[0]
