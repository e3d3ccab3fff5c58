"""Which publisher keys this machine trusts: per-namespace pins, revoked keys, and opt-in trust on first use.

The trust file ($STEERLAB_HOME/trust.json) is the client's own. Nothing a store says about keys is believed: the key
that verified a signature is compared with the pins (its public key, or the key id computed here from it), never with
the store's `key_id`. A pinned namespace refuses every other key; a revoked key's entries are refused everywhere.
Trust on first use is off unless turned on (`steerlab hub trust --tofu`, or a pull's `--tofu`): it then pins the
first key seen for a namespace that has no pin.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerlab.atomic import atomic_write
from steerlab.errors import SteerlabError
from steerlab.hub import signing
from steerlab.hub.errors import Untrusted
from steerlab.hub.seen import Seen, default_seen_path

if TYPE_CHECKING:
    from steerlab.hub.entry import EntryInfo

TRUST_FILE = "trust.json"
FORMAT = "steerlab.trust"
KEY_ID_RE = re.compile(rf"^[0-9a-f]{{{signing.KEY_ID_CHARS}}}$")


def default_trust_path() -> Path:
    from steerlab.defaults import steerlab_home

    return steerlab_home() / TRUST_FILE


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Key:
    """A trusted key as a user gave it: a key id (what `steerlab hub keygen` prints) or the public key (stronger:
    a key id is 64 bits of its hash)."""

    key_id: str
    public_key: str | None = None

    @classmethod
    def parse(cls, text: str) -> Key:
        text = text.strip()
        if KEY_ID_RE.fullmatch(text.lower()):
            return cls(text.lower())
        try:
            signing.public_key(text)
        except SteerlabError as exc:
            raise SteerlabError(
                f"{text[:48]!r} is neither a key id ({signing.KEY_ID_CHARS} hex characters, as `steerlab hub keygen` "
                "prints) nor an ed25519 public key (base64 of 32 bytes, as `steerlab hub keygen` prints too)."
            ) from exc
        return cls(signing.key_id(text), text)

    def matches(self, public_b64: str) -> bool:
        """Whether the key that verified a signature is this one, judged only from that key."""
        if self.public_key is not None:
            return base64.b64decode(self.public_key) == base64.b64decode(public_b64)
        return signing.key_id(public_b64) == self.key_id


@dataclass(frozen=True)
class Pin:
    key: Key
    added_at: str
    note: str = ""
    source: str = "pinned"  # "pinned" by the user, "tofu" on first use, "package" for the shipped starter pack

    def to_dict(self) -> dict[str, Any]:
        return {"key_id": self.key.key_id, "public_key": self.key.public_key, "added_at": self.added_at,
                "note": self.note, "source": self.source}  # fmt: skip

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Pin:
        key = Key(str(raw["key_id"]), raw.get("public_key") or None)
        return cls(key, str(raw.get("added_at", "")), str(raw.get("note", "")), str(raw.get("source", "pinned")))


@dataclass(frozen=True)
class Revocation:
    key_id: str
    revoked_at: str
    reason: str = ""


@dataclass
class TrustFile:
    """Pins per namespace, revoked key ids, and the trust-on-first-use switch; `path` None keeps it in memory."""

    path: Path | None = None
    pins: dict[str, list[Pin]] = field(default_factory=dict)
    revoked: dict[str, Revocation] = field(default_factory=dict)
    tofu: bool = False

    @classmethod
    def load(cls, path: Path | None = None) -> TrustFile:
        path = path or default_trust_path()
        if not path.is_file():
            return cls(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("format") != FORMAT:
                raise ValueError(f"format is {raw.get('format')!r}, not {FORMAT!r}")
            pins = {ns: [Pin.from_dict(p) for p in pins] for ns, pins in raw.get("namespaces", {}).items()}
            listed = raw.get("revoked", {}).items()
            revoked = {k: Revocation(k, v.get("revoked_at", ""), v.get("reason", "")) for k, v in listed}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SteerlabError(f"cannot read the trust file {path} ({exc}): fix it or move it away.") from exc
        return cls(path, pins, revoked, bool(raw.get("tofu", False)))

    def save(self) -> None:
        if self.path is None:
            return
        body = {
            "format": FORMAT,
            "format_version": 1,
            "tofu": self.tofu,
            "namespaces": {ns: [p.to_dict() for p in pins] for ns, pins in sorted(self.pins.items())},
            "revoked": {k: {"revoked_at": r.revoked_at, "reason": r.reason} for k, r in sorted(self.revoked.items())},
        }
        atomic_write(self.path, (json.dumps(body, indent=1) + "\n").encode())  # readers never see half a file

    def pin(self, namespace: str, key: Key, note: str = "", source: str = "pinned") -> Pin:
        """Trust `key` for `namespace` (beside any key already pinned there: that is how a key is rotated)."""
        from steerlab.hub.refs import check_name

        check_name(namespace, "namespace")
        if key.key_id in self.revoked:
            raise SteerlabError(f"key {key.key_id} is revoked; it cannot be pinned again. Pin the publisher's new key.")
        kept = [p for p in self.pins.get(namespace, []) if p.key.key_id != key.key_id]
        pin = Pin(key, _now(), note, source)
        self.pins[namespace] = [*kept, pin]
        return pin

    def revoke(self, key: Key, reason: str = "") -> Revocation:
        """A revoked key's entries are refused in every namespace, whatever pins it."""
        revocation = Revocation(key.key_id, _now(), reason)
        self.revoked[key.key_id] = revocation
        return revocation


@dataclass
class Trust:
    """What a pull accepts: the trust file's pins and revocations, pins that ship with the package (`builtin`), and
    whether every entry must be signed by a trusted key (`required`, as `steerlab serve --store` asks), and the
    newest versions verified so far (`seen`, against rollbacks)."""

    file: TrustFile = field(default_factory=TrustFile)
    builtin: dict[str, list[Key]] = field(default_factory=dict)
    required: bool = False
    tofu: bool = False
    seen: Seen = field(default_factory=Seen)

    @classmethod
    def load(cls, required: bool = False, tofu: bool = False) -> Trust:
        """This machine's trust file and version record (under $STEERLAB_HOME)."""
        return cls(TrustFile.load(), required=required, tofu=tofu, seen=Seen(default_seen_path()))

    def pinned(self, namespace: str) -> list[Key]:
        return [p.key for p in self.file.pins.get(namespace, [])] + self.builtin.get(namespace, [])

    def check(
        self, info: EntryInfo, signer: str | None, explicit: Iterable[str] | None = None, require_signed: bool = False
    ) -> None:
        """Refuse `info` unless its signer (the public key that verified its signature, None when unsigned) is
        acceptable: not revoked, one of the namespace's pins, one of `explicit` (key ids or public keys)."""
        named = [Key.parse(k) for k in explicit or ()]
        pins = self.pinned(info.namespace)
        if signer is None:
            if named or pins or self.required or require_signed:
                if self.required and not (named or pins or require_signed):
                    raise Untrusted(
                        f"{info.ref} is not signed, and only content signed by a trusted key is accepted here: "
                        "ask its publisher to sign it, or (steerlab serve) start with --allow-unsigned."
                    )
                why = f"namespace {info.namespace!r} is pinned" if pins else "signed content was required"
                raise Untrusted(f"{info.ref} is not signed, and {why} (--require-signed, --trusted-key, a pin).")
            return
        key_id = signing.key_id(signer)
        revoked = self.file.revoked.get(key_id)
        if revoked is not None:
            raise Untrusted(
                f"{info.ref} is signed by key {key_id}, revoked on {revoked.revoked_at}"
                f"{f' ({revoked.reason})' if revoked.reason else ''}: refused. `steerlab hub trust --list` lists them."
            )
        if pins and not any(k.matches(signer) for k in pins):
            raise Untrusted(
                f"{info.ref} is signed by key {key_id}, but namespace {info.namespace!r} is pinned to "
                f"{', '.join(k.key_id for k in pins)}: refused. If the publisher rotated keys, check the new one with "
                f"them and pin it: `steerlab hub trust {info.namespace} NEW_KEY`."
            )
        if named and not any(k.matches(signer) for k in named):
            raise Untrusted(
                f"{info.ref} is signed by key {key_id}, not one of the trusted keys "
                f"({', '.join(k.key_id for k in named)})."
            )
        if pins or named:
            return
        if self.tofu or self.file.tofu:
            self.file.pin(info.namespace, Key(key_id, signer), f"first use: {info.ref}", source="tofu")
            self.file.save()
            return
        if self.required:
            raise Untrusted(
                f"{info.ref} is signed by key {key_id}, but no key is trusted for namespace {info.namespace!r}: "
                f"check the key with its publisher, then `steerlab hub trust {info.namespace} {key_id}` "
                "(or --allow-unsigned)."
            )

    def status(self, info: EntryInfo) -> str:
        """How a listing shows an entry's signer: the key id computed here, and whether it is pinned or revoked."""
        if not info.public_key:
            return "no"
        try:
            key_id = signing.key_id(info.public_key)
        except SteerlabError:
            return "bad key"
        if key_id in self.file.revoked:
            return f"{key_id} REVOKED"
        pinned = any(k.matches(info.public_key) for k in self.pinned(info.namespace))
        return f"{key_id} (pinned)" if pinned else key_id
