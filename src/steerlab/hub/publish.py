"""Preparing an upload on the publisher's side: read the file, tell vector from kit, sign it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from steerlab.errors import SteerlabError
from steerlab.hub import signing
from steerlab.hub.blobs import sha256_hex
from steerlab.hub.store import Publication
from steerlab.hub.validate import DEFAULT_MAX_BYTES, check_upload


def default_key_path() -> Path:
    from steerlab.defaults import steerlab_home

    return steerlab_home() / "keys" / "publisher.pem"


def kind_of(path: Path) -> str:
    """Kits are JSON files; everything else is taken for a vector (safetensors)."""
    return "kit" if path.suffix.lower() == ".json" else "vector"


def prepare(
    path: Path,
    ref: str,
    tags: Sequence[str] = (),
    description: str | None = None,
    key_path: Path | None = None,
    sign: bool = True,
) -> tuple[bytes, Publication]:
    """The file's bytes and a Publication, signed with `key_path` (default: the publisher key, made on first use)."""
    if not path.is_file():
        raise SteerlabError(f"{path} does not exist or is not a file.")
    data = path.read_bytes()
    kind = kind_of(path)
    pub = Publication(ref=ref, kind=kind, tags=list(tags), description=description)
    if sign:
        sign_publication(data, pub, key_path or default_key_path())
    return data, pub


def sign_publication(data: bytes, pub: Publication, key_path: Path) -> None:
    """Check the content first (a signature on a file the store will refuse is no use), then sign hash + card."""
    checked = check_upload(data, pub.kind, max_bytes=max(len(data), DEFAULT_MAX_BYTES))
    key = signing.load_or_create_key(key_path)
    pub.signature = signing.sign(key, pub.kind, sha256_hex(data), checked.card)
    pub.public_key = signing.public_key_b64(key)
