"""Integrity checks: one entry's content against its catalogue row, and a whole store."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from steerlab.errors import SteerlabError
from steerlab.hub import signing
from steerlab.hub.blobs import BlobStore, sha256_hex
from steerlab.hub.entry import EntryInfo
from steerlab.hub.validate import check_upload

STALE_AFTER_S = 3600.0  # younger temp files and orphans may belong to an upload that is still in progress


def check_content(
    info: EntryInfo, data: bytes, require_signed: bool = False, trusted_keys: Iterable[str] | None = None
) -> None:
    """Refuse content whose hash, card or signature does not match what the catalogue says about it."""
    actual = sha256_hex(data)
    if actual != info.sha256:
        raise SteerlabError(f"{info.ref}: content hash {actual[:12]} differs from the catalogue's {info.sha256[:12]}.")
    checked = check_upload(data, info.kind, max_bytes=max(len(data), 1))
    if checked.card != info.card:
        raise SteerlabError(f"{info.ref}: the card in the catalogue differs from the card inside the content.")
    if info.signature and info.public_key:
        signing.verify(info.public_key, info.signature, info.kind, info.sha256, checked.card)
    elif require_signed:
        raise SteerlabError(f"{info.ref} is not signed, and signed content was required (--require-signed).")
    trusted = set(trusted_keys or ())
    if trusted and info.key_id not in trusted:
        raise SteerlabError(f"{info.ref} is signed by key {info.key_id or 'none'}, not one of the trusted keys.")


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
