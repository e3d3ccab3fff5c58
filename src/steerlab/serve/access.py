"""Who may steer what: bearer keys checked against the key file, per-key rate limits, allowed names and scale caps."""

from __future__ import annotations

import hmac
import threading
import time
from fnmatch import fnmatchcase
from pathlib import Path

from steerlab.errors import SteerlabError
from steerlab.kit import Kit
from steerlab.serve.errors import ApiError
from steerlab.serve.keys import ApiKey, hash_secret, load_keys
from steerlab.serve.protocol import Steering

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


class KeyRing:
    """The keys of one server; thread-safe (requests authenticate concurrently).

    Loaded from a file, the ring re-reads it whenever it changes (its mtime, size or inode, checked on each request),
    so a key taken out of the file is refused from the next request on, without a restart. A file that cannot be
    read any more fails closed: every request gets a 503 naming the problem until the file is fixed (the old keys are
    never trusted past a change the server could not read, since that change may have been a revocation)."""

    def __init__(self, keys: list[ApiKey], path: Path | None = None, stamp: tuple[int, int, int] | None = None) -> None:
        self._by_hash = {key.sha256: key for key in keys}
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens left, last refill time)
        self._lock = threading.Lock()
        self._path = path  # None: a fixed set of keys
        self._stamp = stamp
        self._broken: str | None = None

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        stamp = _stamp(path)  # taken before reading: a change made while reading is seen on the next request
        return cls(load_keys(path), path, stamp)

    def _refresh(self) -> None:
        if self._path is None:
            return
        with self._lock:
            stamp = _stamp(self._path)
            if stamp == self._stamp and self._broken is None:
                return
            try:
                keys = load_keys(self._path)
            except SteerlabError as exc:
                self._by_hash, self._broken = {}, str(exc)
            else:
                self._by_hash, self._broken = {key.sha256: key for key in keys}, None
            self._stamp = stamp
            broken = self._broken
        if broken is not None:
            raise ApiError(
                f"the server's API-key file cannot be read, so no key is accepted until it is fixed: {broken}",
                status=503,
                code="api_keys_unreadable",
            )

    def authenticate(self, authorization: str | None) -> ApiKey:
        """The key an `Authorization: Bearer ...` header presents, or a 401; then its rate limit (429)."""
        self._refresh()
        scheme, _, secret = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise ApiError(
                "this server needs an API key: send 'Authorization: Bearer KEY' (the openai client's api_key).",
                status=401,
                code="missing_api_key",
                headers=UNAUTHORIZED,
            )
        digest = hash_secret(secret.strip())
        key = self._by_hash.get(digest)
        # The dict lookup is on a hash of the secret, so its timing says nothing about the secret; compare anyway.
        if key is None or not hmac.compare_digest(key.sha256, digest):
            raise ApiError("invalid API key.", status=401, code="invalid_api_key", headers=UNAUTHORIZED)
        self._take(key)
        return key

    def _take(self, key: ApiKey) -> None:
        if key.rate is None:
            return
        per_s = key.rate.count / key.rate.period_s
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key.id, (float(key.rate.count), now))
            tokens = min(float(key.rate.count), tokens + (now - last) * per_s)
            if tokens < 1.0:
                self._buckets[key.id] = (tokens, now)
                wait = (1.0 - tokens) / per_s
                raise ApiError(
                    f"rate limit of key {key.id!r} reached ({key.rate}); retry in {wait:.1f} s.",
                    status=429,
                    code="rate_limit_exceeded",
                    headers={"Retry-After": str(max(1, round(wait + 0.5)))},
                )
            self._buckets[key.id] = (tokens - 1.0, now)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when the file is edited or replaced (atomic writes give it a new inode); None: it is gone."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size, info.st_ino


def requested_names(spec: Steering) -> list[str]:
    """The names a request's `steering` asks for (a kit name, or each entry's vector)."""
    if spec is None or spec == [] or spec == "none":
        return []
    if isinstance(spec, str):
        return [spec]
    return [item.vector for item in spec]


def allows(key: ApiKey, name: str) -> bool:
    """`name` (or its kit, for KIT:AXIS; or its unversioned ref, for ns/name@version) matches one of the patterns."""
    forms = {name, name.partition(":")[0], name.partition("@")[0]}
    return any(fnmatchcase(form, pattern) for form in forms for pattern in key.allow)


def authorize(key: ApiKey, spec: Steering, kit: Kit | None) -> None:
    """403 for a name the key may not use; 400 for a scale above its cap (the server's own cap is checked first)."""
    for name in requested_names(spec):
        if not allows(key, name):
            raise ApiError(
                f"key {key.id!r} may not steer with {name!r}; it may use {', '.join(key.allow)}.",
                status=403,
                code="steering_not_allowed",
                param="steering",
            )
    if kit is None or key.max_scale is None:
        return
    for index, entry in enumerate(kit.entries):
        if abs(entry.scale) > key.max_scale:
            raise ApiError(
                f"scale {entry.scale:g} of {entry.vector.card.name or f'entry {index}'} is above the cap of key "
                f"{key.id!r} (±{key.max_scale:g}); use a smaller scale.",
                code="scale_too_large",
                param=f"steering[{index}].scale",
            )
