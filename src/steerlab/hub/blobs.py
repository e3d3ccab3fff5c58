"""Content-addressed blobs on disk: sha256-named files, written to a temp file, fsynced, then renamed into place."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from steerlab.atomic import atomic_write
from steerlab.errors import SteerlabError

DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
TMP_PREFIX = ".incoming-"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(folder: Path) -> None:
    # The rename is only durable once the directory entry itself is on disk.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    """`root/ab/cdef...`: a blob's name is its sha256, so a blob either exists whole or not at all."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        if not DIGEST_RE.fullmatch(digest):
            raise SteerlabError(f"invalid blob digest {digest!r}: expected 64 lower-case hex characters (sha256).")
        return self.root / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put(self, data: bytes) -> str:
        return self.put_stream([data])[0]

    def put_stream(self, chunks: Iterable[bytes], limit: int | None = None) -> tuple[str, int]:
        """Write chunks to a temp file, hashing as they come; rename to the digest only when complete."""
        handle = self.open_incoming()
        try:
            for chunk in chunks:
                handle.write(chunk)
                if limit is not None and handle.size > limit:
                    raise SteerlabError(f"upload is larger than the limit of {limit} bytes.")
            return handle.commit(self)
        finally:
            handle.discard()

    def open_incoming(self) -> Incoming:
        return Incoming(self.tmp)

    @staticmethod
    def write_file(target: Path, data: bytes) -> None:
        """Atomic write of any file (a pulled vector)."""
        atomic_write(target, data)

    def read(self, digest: str) -> bytes:
        target = self.path(digest)
        if not target.is_file():
            raise SteerlabError(f"blob {digest} is missing from {self.root}: run `steerlab hub verify`.")
        return target.read_bytes()

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def digests(self) -> Iterator[str]:
        for folder in sorted(self.root.glob("[0-9a-f][0-9a-f]")):
            for file in sorted(folder.iterdir()):
                digest = folder.name + file.name
                if DIGEST_RE.fullmatch(digest):
                    yield digest

    def leftovers(self) -> list[Path]:
        """Temp files of uploads that never finished (a writer killed mid-way); never visible as blobs."""
        return sorted(p for p in self.tmp.iterdir() if p.name.startswith(TMP_PREFIX))

    def clean_leftovers(self, older_than_s: float = 3600.0) -> int:
        """Remove abandoned temp files; recent ones may belong to an upload still in progress."""
        cutoff = time.time() - older_than_s
        removed = 0
        for path in self.leftovers():
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed


class Incoming:
    """One upload in progress: a temp file and a running sha256."""

    def __init__(self, tmp_dir: Path) -> None:
        fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, dir=tmp_dir)
        self._file = os.fdopen(fd, "wb")
        self.path = Path(name)
        self.size = 0
        self._hash = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    @property
    def digest(self) -> str:
        return self._hash.hexdigest()

    def read_back(self) -> bytes:
        self._file.flush()
        return self.path.read_bytes()

    def commit(self, store: BlobStore) -> tuple[str, int]:
        """fsync, then rename into place; identical content already there is simply kept."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        target = store.path(self.digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path, target)
        _fsync_dir(target.parent)
        return self.digest, self.size

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)
