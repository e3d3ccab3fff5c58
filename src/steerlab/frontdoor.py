"""`steerlab.resolve`: the one front door from an address (a vector file, a kit file, a store ref) to a Kit.

The grammar is steerlab.address's. What a vector's address leaves out comes from its card (`KitEntry.from_card`);
a kit file's entries are checked against their recorded sha256; a store kit's entries, and the conditions its `when`
records name, are found by sha256 in the same store. Every caller that turns a user's address into steering (CLI,
server, bench, hub) comes through here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlab import kitfile
from steerlab.address import Address, check_no_tail, parse_address
from steerlab.condition import Condition
from steerlab.errors import SteerlabError
from steerlab.kit import EntrySource, Kit, KitCard, KitEntry
from steerlab.vector import Vector


@dataclass(frozen=True)
class Found:
    """What an address resolved to: the Kit, where each entry's vector came from (and the sha256 of its bytes), and
    whether the address named a kit (a kit file or a store kit) rather than one vector."""

    kit: Kit
    sources: list[EntrySource]
    is_kit: bool


def resolve(address: str, store: Any = None, model: Any = None) -> Kit:
    """The Kit an address names (grammar: steerlab.address). `store`: a LocalStore, a RemoteStore, or a folder / URL
    to open, used for NAMESPACE/NAME refs (default: the local store under $STEERLAB_HOME, which holds the shipped
    starter pack). `model`: when given, every vector is checked against it (hidden size,
    depth, architecture fingerprint) and a mismatch is a clear error."""
    return find(address, store, model).kit


def find(address: str, store: Any = None, model: Any = None) -> Found:
    """`resolve`, and where each entry came from: what the server's audit log and `kit new` need."""
    parsed = parse_address(address)
    if parsed.kind == "kit-file":
        return Found(*kitfile.load_kit_with_info(parsed.target, model), is_kit=True)
    if parsed.kind == "vector-file":
        path = Path(parsed.target).expanduser()
        data = path.read_bytes()
        vector = Vector.from_bytes(data, str(path))
        source = EntrySource(vector.card.name or path.stem, hashlib.sha256(data).hexdigest(), str(path), path)
        return _single(vector, parsed, source, model, address)
    return _from_store(parsed, store, model, address)


def _single(vector: Vector, parsed: Address, source: EntrySource, model: Any, address: str) -> Found:
    _check(vector, model, repr(address))
    try:
        entry = KitEntry.from_card(vector, parsed.scale, parsed.layers)
    except SteerlabError as exc:
        raise SteerlabError(f"{address!r}: {exc}") from exc
    return Found(Kit([entry], KitCard(name=source.name, base_model=vector.card.base_model)), [source], is_kit=False)


def _check(vector: Vector, model: Any, where: str) -> None:
    if model is None:
        return
    try:
        vector.check_compatible(model)
    except SteerlabError as exc:
        raise SteerlabError(f"{where}: {exc}") from exc


def _from_store(parsed: Address, store: Any, model: Any, address: str) -> Found:
    # No store named: the default local store, as on the command line (it holds the shipped starter pack).
    opened = _open(store)
    try:
        info, data = opened.get_bytes(parsed.target)  # checked against its hash, card and signature
        if info.kind == "vector":
            vector = Vector.from_bytes(data, f"{opened}:{info.ref}")
            return _single(vector, parsed, EntrySource(info.name, info.sha256, info.ref), model, address)
        if info.kind != "kit":
            raise SteerlabError(
                f"{address!r} is a {info.kind} in the store, not a vector or a kit: a condition steers nothing by "
                "itself; name it in a kit's 'when' (`steerlab kit new NAME --vector ... --when FILE`)."
            )
        check_no_tail(parsed, address)
        return store_kit(opened, info, data, model)
    finally:
        if opened is not store:
            opened.close()


def store_kit(store: Any, info: Any, data: bytes, model: Any = None) -> Found:
    """A kit from the store: its entries' vectors are found by sha256 in the same store (steerlab.hub.content).
    `info` may describe a kit not yet published (the store's upload screen builds the kit it is about to store)."""
    from steerlab.hub.content import fetch_kit

    stored = fetch_kit(store, info, data)
    entries, sources = [], []
    for index, (record, (entry_info, entry_data)) in enumerate(
        zip(stored.document["entries"], stored.vectors, strict=True)
    ):
        vector = Vector.from_bytes(entry_data, f"{store}:{entry_info.ref}")
        _check(vector, model, stored.where(index))
        when = _store_condition(store, stored, record, model, stored.where(index))
        entries.append(kitfile.entry_from_record(record, vector, stored.where(index), when))
        sources.append(EntrySource(stored.names[index], entry_info.sha256, entry_info.ref))
    card = kitfile.card_from_document(stored.document.get("card") or {}, info.name)
    condition = _store_condition(store, stored, stored.document, model, f"store kit {info.ref}")
    return Found(Kit(entries, card, condition), sources, is_kit=True)


def _store_condition(store: Any, stored: Any, record: dict[str, Any], model: Any, where: str) -> Condition | None:
    """The condition `record` (the kit document or one entry) names in its `when`, fetched by sha256 (None: none)."""
    if "when" not in record:
        return None
    info, data = stored.condition_bytes(record["when"])
    try:
        condition = Condition.from_bytes(data, f"{store}:{info.ref}")
        if model is not None:
            condition.check_compatible(model)
    except SteerlabError as exc:
        raise SteerlabError(f"{where}: {exc}") from exc
    return condition


def _open(store: Any) -> Any:
    if store is None or isinstance(store, str | Path):
        from steerlab.hub import open_store

        return open_store(store)
    return store
