"""The newest signed version this client has verified of each entry of each server, so a server cannot roll back.

A signature names its entry's version, so a server cannot pass an old version off as a new one; but asked for the
latest, it could still answer with an older, genuinely signed version. This record ($STEERLAB_HOME/seen.json)
refuses that once a newer version has been verified here. A version the publisher withdrew also trips it: pull that
one by its version to accept it.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from steerlab.atomic import atomic_write
from steerlab.errors import SteerlabError
from steerlab.hub.refs import Version

SEEN_FILE = "seen.json"


def default_seen_path() -> Path:
    from steerlab.defaults import steerlab_home

    return steerlab_home() / SEEN_FILE


class Seen:
    """`path` None keeps the record in memory (one client object's lifetime)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._memory: dict[str, str] = {}

    def _read(self) -> dict[str, str]:
        if self.path is None or not self.path.is_file():
            return dict(self._memory)
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SteerlabError(f"cannot read {self.path} ({exc}): move it away to forget the versions seen.") from exc
        return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    def check_latest(self, store: str, base: str, version: str) -> None:
        """Refuse `version` as the latest of `base` when a newer one was verified from `store` before."""
        newest = self._read().get(f"{store} {base}")
        if newest and Version.parse(version).sort_key() < Version.parse(newest).sort_key():
            raise SteerlabError(
                f"{store} offers {base}@{version} as the latest, but {base}@{newest} was verified from it before: a "
                f"rollback (or a withdrawn version). Refused; pull {base}@{version} by its version to accept it."
            )

    def record(self, store: str, base: str, version: str) -> None:
        with self._lock:
            seen = self._read()
            key = f"{store} {base}"
            old = seen.get(key)
            if old and Version.parse(old).sort_key() >= Version.parse(version).sort_key():
                return
            seen[key] = version
            self._memory = seen
            if self.path is not None:
                atomic_write(self.path, (json.dumps(seen, indent=1, sort_keys=True) + "\n").encode())
