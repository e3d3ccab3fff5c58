"""Publisher signatures: ed25519 over the entry's ref, the blob's sha256 and its card.

The ref (NAMESPACE/NAME@VERSION) is signed so that a store cannot serve one signed entry under another's name, or an
older version as the newest: the signature says which entry the publisher meant. Version 1 signatures covered only
the hash and the card; they are recognised, to say so, and refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from steerlab.errors import SteerlabError

DOMAIN = b"steerlab-hub-signature-v2\n"
LEGACY_DOMAIN = b"steerlab-hub-signature-v1\n"
KEY_ID_CHARS = 16


def canonical_card(card: dict[str, Any]) -> bytes:
    """One byte string per card however it was serialised: sorted keys, no spaces."""
    return json.dumps(card, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def signed_message(kind: str, ref: str, sha256: str, card: dict[str, Any]) -> bytes:
    return DOMAIN + kind.encode() + b"\n" + ref.encode() + b"\n" + sha256.encode() + b"\n" + canonical_card(card)


def _legacy_message(kind: str, sha256: str, card: dict[str, Any]) -> bytes:
    return LEGACY_DOMAIN + kind.encode() + b"\n" + sha256.encode() + b"\n" + canonical_card(card)


def generate_key(path: Path) -> Ed25519PrivateKey:
    """A new private key written as PEM, readable by its owner only."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return key


def load_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SteerlabError(f"cannot read signing key {path}: {exc}. Create one with `steerlab hub keygen`.") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SteerlabError(f"{path} is not an ed25519 private key; create one with `steerlab hub keygen`.")
    return key


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    return load_key(path) if path.exists() else generate_key(path)


def public_key_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def key_id(public_b64: str) -> str:
    """A short, stable name for a public key (what people compare and pin)."""
    return hashlib.sha256(_decode(public_b64, "public key")).hexdigest()[:KEY_ID_CHARS]


def sign(key: Ed25519PrivateKey, kind: str, ref: str, sha256: str, card: dict[str, Any]) -> str:
    """`ref` is the full NAMESPACE/NAME@VERSION the entry is published as."""
    return base64.b64encode(key.sign(signed_message(kind, ref, sha256, card))).decode()


def verify(public_b64: str, signature_b64: str, kind: str, ref: str, sha256: str, card: dict[str, Any]) -> str:
    """The key id of `public_b64` (computed here) if `signature` signs exactly this entry, content and card;
    SteerlabError otherwise."""
    public = public_key(public_b64)
    signature = _decode(signature_b64, "signature")
    try:
        public.verify(signature, signed_message(kind, ref, sha256, card))
        return key_id(public_b64)
    except InvalidSignature:
        pass
    if _verifies(public, signature, _legacy_message(kind, sha256, card)):
        raise SteerlabError(
            f"{ref}: signed in the version 1 format, which does not name the entry, so a store could serve it under "
            "any name or version; the publisher must publish it again with a current steerlab (it signs the ref)."
        )
    raise SteerlabError(
        f"bad signature on {ref}: the signature by key {key_id(public_b64)} does not match this entry, content and "
        "card (it was changed after signing, served under another name or version, or signed by another key)."
    )


def public_key(public_b64: str) -> Ed25519PublicKey:
    raw_key = _decode(public_b64, "public key")
    if len(raw_key) != 32:
        raise SteerlabError("the publisher's public key is not a 32-byte ed25519 key.")
    return Ed25519PublicKey.from_public_bytes(raw_key)


def _verifies(public: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        public.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:
        raise SteerlabError(f"the {what} is not valid base64.") from exc
