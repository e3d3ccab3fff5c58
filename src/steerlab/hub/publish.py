"""Preparing an upload on the publisher's side: read the file, tell vector from kit, pick the version, sign it.

A signature covers NAMESPACE/NAME@VERSION, so a signed upload must know its version before it is sent: `publish`
picks the next free one from what the store lists, and tries the next when another publish takes it first.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steerlab.card import CARD_KEY, CONDITION_SITE
from steerlab.errors import SteerlabError
from steerlab.hub import signing
from steerlab.hub.blobs import sha256_hex
from steerlab.hub.entry import EntryInfo
from steerlab.hub.errors import Conflict, NotFound
from steerlab.hub.protocol import Publication
from steerlab.hub.refs import Version, parse_ref
from steerlab.hub.validate import DEFAULT_MAX_BYTES, check_upload, read_header

VERSION_TRIES = 20  # removed versions are never reused and the store does not list them: skip past them


def default_key_path() -> Path:
    from steerlab.defaults import steerlab_home

    return steerlab_home() / "keys" / "publisher.pem"


def kind_of(path: Path, data: bytes | None = None) -> str:
    """Kits are JSON files; a safetensors file whose card's site is "condition" is a condition (steerlab.Condition);
    everything else is taken for a vector. A file that does not parse is left to the upload's checks to refuse."""
    if path.suffix.lower() == ".json":
        return "kit"
    try:
        _, meta = read_header(data if data is not None else path.read_bytes())
        site = json.loads(meta.get(CARD_KEY, "{}")).get("site")
    except (SteerlabError, ValueError, AttributeError):
        return "vector"
    return "condition" if site == CONDITION_SITE else "vector"


def prepare(
    path: Path, ref: str, tags: Sequence[str] = (), description: str | None = None
) -> tuple[bytes, Publication]:
    """The file's bytes and an (unsigned) Publication."""
    if not path.is_file():
        raise SteerlabError(f"{path} does not exist or is not a file.")
    data = path.read_bytes()
    return data, Publication(ref=ref, kind=kind_of(path, data), tags=list(tags), description=description)


def publish(store: Any, data: bytes, pub: Publication, key_path: Path | None = None, sign: bool = True) -> EntryInfo:
    """Publish into any Store; signed with `key_path` (default: the publisher key, made on first use) unless
    `sign` is False. A signed publication without a version gets the next free one."""
    if not sign:
        return store.publish(data, pub)
    key = key_path or default_key_path()
    ref = parse_ref(pub.ref)
    if ref.version:
        sign_publication(data, pub, key)
        return store.publish(data, pub)
    version = _next_version(store, ref.base)
    for _ in range(VERSION_TRIES):
        pub.ref = f"{ref.base}@{version}"
        sign_publication(data, pub, key)
        try:
            return store.publish(data, pub)
        except Conflict:
            version = version.next_patch()
    raise Conflict(f"could not find a free version for {ref.base}: name one (--name {ref.base}@VERSION).")


def _next_version(store: Any, base: str) -> Version:
    try:
        listed = store.versions(base)
    except NotFound:
        return Version(1, 0, 0)
    versions = [Version.parse(info.version) for info in listed]
    return max(versions, key=Version.sort_key).next_patch() if versions else Version(1, 0, 0)


def sign_publication(data: bytes, pub: Publication, key_path: Path) -> None:
    """Check the content first (a signature on a file the store will refuse is no use), then sign ref + hash + card.
    `pub.ref` must name its version."""
    ref = parse_ref(pub.ref)
    if not ref.version:
        raise SteerlabError(f"a signature covers the version: name it ({ref}@VERSION) or use hub.publish.publish.")
    checked = check_upload(data, pub.kind, max_bytes=max(len(data), DEFAULT_MAX_BYTES))
    key = signing.load_or_create_key(key_path)
    pub.ref = str(ref)
    pub.signature = signing.sign(key, pub.kind, str(ref), sha256_hex(data), checked.card)
    pub.public_key = signing.public_key_b64(key)
