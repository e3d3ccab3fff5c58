"""Store kits: a kit's entries name their vectors by sha256, and the vectors are found by it in the same store.

`store` is any steerlab.hub.protocol.Store (local or remote): `get_bytes` checks content against its hash, card and
signature, and `search(kind=..., all_versions=...)` lists what the kit's hashes are looked up in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerlab.errors import SteerlabError
from steerlab.hub.blobs import BlobStore
from steerlab.hub.entry import EntryInfo
from steerlab.kitschema import check_document

if TYPE_CHECKING:
    from steerlab.hub.protocol import Store


@dataclass
class StoredKit:
    """A kit from the store as bytes: its document, and per entry the vector's store entry and exact bytes.
    Torch-free (pulling a kit needs no model); `steerlab.resolve` turns it into a Kit."""

    info: EntryInfo
    document: dict[str, Any]
    data: bytes
    names: list[str]
    vectors: list[tuple[EntryInfo, bytes]]

    def where(self, index: int) -> str:
        return f"store kit {self.info.ref}: entry {index + 1} ({self.names[index]})"


def fetch_kit(
    store: Store,
    info: EntryInfo,
    data: bytes,
    require_signed: bool = False,
    trusted_keys: Iterable[str] | None = None,
) -> StoredKit:
    """The kit in `data` (already checked by the store), each entry's vector fetched and checked by its sha256."""
    document = check_document(json.loads(data), f"store kit {info.ref}", portable=True)
    by_hash = _vectors_by_hash(store, info.namespace)
    names = [str(record.get("name") or f"entry {i + 1}") for i, record in enumerate(document["entries"])]
    stored = StoredKit(info, document, data, names, [])
    for index, record in enumerate(document["entries"]):
        where = stored.where(index)
        digest = record.get("sha256")
        if not digest:
            raise SteerlabError(f"{where} records no sha256; a store kit finds its vectors by hash.")
        found = by_hash.get(digest)
        if found is None:
            raise SteerlabError(
                f"{where}: no vector with sha256 {digest[:12]}… in {store}. Push the kit's vectors too "
                "(`steerlab hub push FILE.safetensors --name NAMESPACE/NAME`)."
            )
        stored.vectors.append(store.get_bytes(found.ref, require_signed=require_signed, trusted_keys=trusted_keys))
    return stored


def _vectors_by_hash(store: Store, namespace: str) -> dict[str, EntryInfo]:
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
    for index, (record, (_, data)) in enumerate(zip(stored.document["entries"], stored.vectors, strict=True)):
        name = record.get("vector") or f"{stored.names[index]}.safetensors"
        planned.append((folder / name, data))
    for path, data in planned:
        if path.exists() and path.read_bytes() != data:
            raise SteerlabError(f"{path} exists and differs from what {stored.info.ref} holds; pull to another --out.")
    for path, data in planned:
        path.parent.mkdir(parents=True, exist_ok=True)
        BlobStore.write_file(path, data)
    return [path for path, _ in planned]
