"""Stored bytes back into steerlab objects: a store kit is a Kit whose vectors are found by sha256 in the same store.

`store` is a LocalStore or a RemoteStore: both answer `get_bytes(ref)` (content checked against its hash, card and
signature) and `search(kind=..., all_versions=...)`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.hub.blobs import BlobStore
from steerlab.hub.entry import EntryInfo
from steerlab.kit import EntrySource, Kit
from steerlab.kitfile import card_from_document, entry_from_record
from steerlab.kitschema import check_document
from steerlab.vector import Vector


@dataclass
class StoredKit:
    """A kit from the store: the Kit, where each entry's vector came from, and the exact bytes of each vector."""

    info: EntryInfo
    kit: Kit
    sources: list[EntrySource]
    document: dict[str, Any]
    data: bytes
    vectors: list[bytes]


def read_kit(
    store: Any,
    info: EntryInfo,
    data: bytes,
    require_signed: bool = False,
    trusted_keys: Iterable[str] | None = None,
) -> StoredKit:
    """The kit in `data` (already checked by the store), each entry's vector fetched and checked by its sha256."""
    document = check_document(json.loads(data), f"store kit {info.ref}", portable=True)
    by_hash = _vectors_by_hash(store, info.namespace)
    entries, sources, blobs = [], [], []
    for index, record in enumerate(document["entries"]):
        label = str(record.get("name") or f"entry {index + 1}")
        where = f"store kit {info.ref}: entry {index + 1} ({label})"
        digest = record.get("sha256")
        if not digest:
            raise SteerlabError(f"{where} records no sha256; a store kit finds its vectors by hash.")
        found = by_hash.get(digest)
        if found is None:
            raise SteerlabError(
                f"{where}: no vector with sha256 {digest[:12]}… in {store}. Push the kit's vectors too "
                "(`steerlab hub push FILE.safetensors --name NAMESPACE/NAME`)."
            )
        vector_info, vector_data = store.get_bytes(found.ref, require_signed=require_signed, trusted_keys=trusted_keys)
        vector = Vector.from_bytes(vector_data, f"{store}:{vector_info.ref}")
        entries.append(entry_from_record(record, vector, where))
        sources.append(EntrySource(label, vector_info.sha256, vector_info.ref))
        blobs.append(vector_data)
    kit = Kit(entries, card_from_document(document.get("card") or {}, info.name))
    return StoredKit(info, kit, sources, document, data, blobs)


def _vectors_by_hash(store: Any, namespace: str) -> dict[str, EntryInfo]:
    """sha256 -> one visible vector entry with those bytes (the kit's own namespace first: the nicer origin)."""
    found: dict[str, EntryInfo] = {}
    listed = store.search(kind="vector", all_versions=True)
    for entry in sorted(listed, key=lambda e: e.namespace != namespace):
        found.setdefault(entry.sha256, entry)
    return found


def write_kit(stored: StoredKit, target: Path) -> list[Path]:
    """The kit file at `target` and each vector's exact bytes where the kit names it, so that the kit file loads
    (hashes and all) from the folder. A different file already at one of those paths is refused, not overwritten."""
    folder = target.parent
    planned = [(target, stored.data)]
    for index, (record, data) in enumerate(zip(stored.document["entries"], stored.vectors, strict=True)):
        name = record.get("vector") or f"{stored.sources[index].name}.safetensors"
        planned.append((folder / name, data))
    for path, data in planned:
        if path.exists() and path.read_bytes() != data:
            raise SteerlabError(f"{path} exists and differs from what {stored.info.ref} holds; pull to another --out.")
    for path, data in planned:
        path.parent.mkdir(parents=True, exist_ok=True)
        BlobStore.write_file(path, data)
    return [path for path, _ in planned]
