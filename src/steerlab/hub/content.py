"""Store kits: a kit's entries name their vectors by sha256, and the vectors are found by it in the same store.

Conditions travel the same way: a kit's `when` (on the kit or an entry) names a condition by sha256, and it is found
among the store's condition entries (`steerlab hub push COND.safetensors` publishes one, signed like a vector). The
kit's signature covers those hashes, so a pulled kit gates with exactly the conditions it was published with.

`store` is any steerlab.hub.protocol.Store (local or remote): `get_bytes` checks content against its hash, card and
signature, and `search(kind=..., all_versions=...)` lists what the kit's hashes are looked up in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
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
    conditions: dict[str, tuple[EntryInfo, bytes]] = field(default_factory=dict)  # sha256 -> entry and bytes

    def where(self, index: int) -> str:
        return f"store kit {self.info.ref}: entry {index + 1} ({self.names[index]})"

    def condition_bytes(self, when: dict[str, Any]) -> tuple[EntryInfo, bytes]:
        """The condition a `when` record names (fetched by `fetch_kit`)."""
        return self.conditions[str(when["sha256"])]


def fetch_kit(
    store: Store,
    info: EntryInfo,
    data: bytes,
    require_signed: bool = False,
    trusted_keys: Iterable[str] | None = None,
) -> StoredKit:
    """The kit in `data` (already checked by the store), each entry's vector fetched and checked by its sha256."""
    document = check_document(json.loads(data), f"store kit {info.ref}", portable=True)
    by_hash = _by_hash(store, "vector", info.namespace)
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
    _fetch_conditions(store, stored, require_signed, trusted_keys)
    return stored


def _when_records(document: dict[str, Any], names: list[str], ref: str) -> list[tuple[str, dict[str, Any]]]:
    """Every `when` in the kit with where it sits (the kit, or an entry), in document order."""
    found = [(f"store kit {ref}", document["when"])] if "when" in document else []
    for index, record in enumerate(document["entries"]):
        if "when" in record:
            found.append((f"store kit {ref}: entry {index + 1} ({names[index]})", record["when"]))
    return found


def _fetch_conditions(
    store: Store, stored: StoredKit, require_signed: bool, trusted_keys: Iterable[str] | None
) -> None:
    wanted = _when_records(stored.document, stored.names, stored.info.ref)
    if not wanted:
        return
    by_hash = _by_hash(store, "condition", stored.info.namespace)
    for where, when in wanted:
        digest = str(when["sha256"])  # the portable schema requires it
        if digest in stored.conditions:
            continue
        found = by_hash.get(digest)
        if found is None:
            raise SteerlabError(
                f"{where}: no condition with sha256 {digest[:12]}… ({when['file']}) in {store}. Push the kit's "
                "conditions too (`steerlab hub push FILE.condition.safetensors --name NAMESPACE/NAME`)."
            )
        fetched = store.get_bytes(found.ref, require_signed=require_signed, trusted_keys=trusted_keys)
        stored.conditions[digest] = fetched


def _by_hash(store: Store, kind: str, namespace: str) -> dict[str, EntryInfo]:
    """sha256 -> one visible entry of `kind` with those bytes (the kit's own namespace first: the nicer origin)."""
    found: dict[str, EntryInfo] = {}
    listed = store.search(kind=kind, all_versions=True)
    for entry in sorted(listed, key=lambda e: e.namespace != namespace):
        found.setdefault(entry.sha256, entry)
    return found


def write_kit(stored: StoredKit, target: Path) -> list[Path]:
    """The kit file at `target` and each vector's and condition's exact bytes where the kit names it, so that the kit
    file loads (hashes and all) from the folder. A different file already at one of those paths is refused, not
    overwritten."""
    folder = target.parent
    planned = [(target, stored.data)]
    for index, (record, (_, data)) in enumerate(zip(stored.document["entries"], stored.vectors, strict=True)):
        name = record.get("vector") or f"{stored.names[index]}.safetensors"
        planned.append((folder / name, data))
    for _, when in _when_records(stored.document, stored.names, stored.info.ref):
        planned.append((folder / str(when["file"]), stored.condition_bytes(when)[1]))
    contents: dict[Path, bytes] = {}
    for path, data in planned:
        if contents.setdefault(path, data) != data:
            raise SteerlabError(f"{stored.info.ref} names {path.name} for two different contents; it cannot be pulled.")
    planned = list(contents.items())  # one condition may gate several entries: written once
    for path, data in planned:
        if path.exists() and path.read_bytes() != data:
            raise SteerlabError(f"{path} exists and differs from what {stored.info.ref} holds; pull to another --out.")
    for path, data in planned:
        path.parent.mkdir(parents=True, exist_ok=True)
        BlobStore.write_file(path, data)
    return [path for path, _ in planned]
