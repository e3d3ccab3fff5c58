"""Integrity checks: one entry's content against its catalogue row, and a whole store."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from steerlab.errors import SteerlabError
from steerlab.hub import signing
from steerlab.hub.blobs import BlobStore, sha256_hex
from steerlab.hub.entry import EntryInfo
from steerlab.hub.refs import Ref
from steerlab.hub.trust import Trust
from steerlab.hub.validate import check_upload

STALE_AFTER_S = 3600.0  # younger temp files and orphans may belong to an upload that is still in progress


def check_content(
    info: EntryInfo,
    data: bytes,
    require_signed: bool = False,
    trusted_keys: Iterable[str] | None = None,
    trust: Trust | None = None,
    requested: Ref | None = None,
) -> None:
    """Refuse content whose hash, card or signature does not match what the catalogue says about it, an entry other
    than the one `requested`, and a signer that `trust` and `trusted_keys` do not accept.

    The signature covers the entry's ref, hash and card, and it is checked against the key that the store sent; what
    makes that key trusted is decided by `trust` from the key itself, never from the store's `key_id`.
    """
    if requested is not None:
        _check_requested(info, requested)
    actual = sha256_hex(data)
    if actual != info.sha256:
        raise SteerlabError(f"{info.ref}: content hash {actual[:12]} differs from the catalogue's {info.sha256[:12]}.")
    checked = check_upload(data, info.kind, max_bytes=max(len(data), 1))
    if checked.card != info.card:
        raise SteerlabError(f"{info.ref}: the card in the catalogue differs from the card inside the content.")
    if bool(info.signature) != bool(info.public_key):
        raise SteerlabError(f"{info.ref}: the store sent half a signature (a signature without its key or back).")
    signer = None
    if info.signature and info.public_key:
        key_id = signing.verify(info.public_key, info.signature, info.kind, info.ref, info.sha256, checked.card)
        if info.key_id and info.key_id != key_id:
            raise SteerlabError(
                f"{info.ref}: the store names key {info.key_id}, but the key that signed is {key_id}: refused (the "
                "store is lying or broken)."
            )
        signer = info.public_key
    (trust or Trust()).check(info, signer, trusted_keys, require_signed)


def _check_requested(info: EntryInfo, requested: Ref) -> None:
    same = (info.namespace, info.name) == (requested.namespace, requested.name)
    if not same or (requested.version and info.version != requested.version):
        raise SteerlabError(f"asked for {requested}, the store answered with {info.ref}: refused.")


@dataclass
class VerifyReport:
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_store(entries: Iterable[EntryInfo], blobs: BlobStore, clean: bool = False) -> VerifyReport:
    """Every live entry's blob exists and matches; leftovers of interrupted uploads are reported (and removed).

    Takes the store's live entries and its blobs rather than the store, so the store can offer `verify` without
    this module depending back on it.
    """
    report = VerifyReport()
    referenced: set[str] = set()
    for info in entries:
        referenced.add(info.sha256)
        report.checked += 1
        try:
            check_content(info, blobs.read(info.sha256))
        except SteerlabError as exc:
            report.problems.append(str(exc))
    cutoff = time.time() - STALE_AFTER_S
    for digest in blobs.digests():
        if digest in referenced:
            continue
        path = blobs.path(digest)
        if clean and path.stat().st_mtime < cutoff:
            blobs.delete(digest)
            report.notes.append(f"removed unreferenced blob {digest[:12]}…")
        else:
            report.notes.append(f"unreferenced blob {digest[:12]}… (an interrupted publish or a removed entry)")
    leftovers = blobs.leftovers()
    removed = blobs.clean_leftovers(STALE_AFTER_S) if clean else 0
    if leftovers:
        report.notes.append(
            f"{len(leftovers)} temp file(s) of unfinished uploads, never visible as entries"
            + (f"; removed {removed} stale one(s)" if clean else "")
        )
    return report
