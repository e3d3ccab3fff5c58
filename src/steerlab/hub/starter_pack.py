"""The shipped starter pack: vector files committed inside the package, a signed manifest, and installing them.

`src/steerlab/data/starter/` holds one `NAME.safetensors` per recipe and `manifest.json`: the pack's namespace and
version, the publisher's ed25519 public key, and per vector its ref, file, sha256, tags, description and signature
(over the sha256 and the card, as every store signature is). The private key is never committed: `make starter-pack`
signs with the key under $STEERLAB_HOME (made on first use) and rewrites the manifest, so a rebuilt pack verifies with
the key that signed it. Installing checks every file's hash and signature against the manifest before it is published
into a store. The default local store installs the pack on first use (`ensure_shipped_pack`); nothing here needs torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.hub import signing
from steerlab.hub.blobs import sha256_hex
from steerlab.hub.trust import Key
from steerlab.hub.validate import check_upload

MANIFEST = "manifest.json"
FORMAT = "steerlab.starter-pack"
FORMAT_VERSION = 1
MARKER = "shipped-pack.json"  # in a store's root: which manifest was installed there, so later opens skip the work


def shipped_dir() -> Path:
    return Path(str(resources.files("steerlab") / "data" / "starter"))


@dataclass(frozen=True)
class PackEntry:
    name: str
    ref: str
    file: str
    sha256: str
    size: int
    tags: list[str]
    description: str
    signature: str


@dataclass(frozen=True)
class Manifest:
    namespace: str
    version: str
    public_key: str
    entries: list[PackEntry]

    @property
    def key_id(self) -> str:
        return signing.key_id(self.public_key)

    def to_json(self) -> str:
        body = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "namespace": self.namespace,
            "version": self.version,
            "public_key": self.public_key,
            "key_id": self.key_id,
            "entries": [e.__dict__ for e in self.entries],
        }
        return json.dumps(body, indent=1, sort_keys=True) + "\n"


def read_manifest(pack_dir: Path | None = None) -> Manifest:
    path = (pack_dir or shipped_dir()) / MANIFEST
    if not path.is_file():
        raise SteerlabError(f"no starter pack manifest at {path}: rebuild the pack with `make starter-pack`.")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("format") != FORMAT or raw.get("format_version") != FORMAT_VERSION:
            raise SteerlabError(f"{path} is not a {FORMAT} v{FORMAT_VERSION} manifest.")
        entries = [PackEntry(**e) for e in raw["entries"]]
        return Manifest(raw["namespace"], raw["version"], raw["public_key"], entries)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SteerlabError(f"{path} is not a readable starter pack manifest ({exc}): rebuild it.") from exc


def sign_pack(
    pack_dir: Path, names: Sequence[str], namespace: str, version: str, key_path: Path, describe: Callable[[str], Any]
) -> Manifest:
    """Sign every `NAME.safetensors` in `pack_dir` with `key_path` and write the manifest; `describe(name)` gives the
    (tags, description) a store lists for it."""
    key = signing.load_or_create_key(key_path)
    entries = []
    for name in names:
        file = f"{name}.safetensors"
        data = (pack_dir / file).read_bytes()
        card = check_upload(data, "vector", max_bytes=len(data)).card
        digest = sha256_hex(data)
        tags, description = describe(name)
        ref = f"{namespace}/{name}@{version}"
        signature = signing.sign(key, "vector", ref, digest, card)
        entries.append(PackEntry(name, ref, file, digest, len(data), sorted(tags), description, signature))
    manifest = Manifest(namespace, version, signing.public_key_b64(key), entries)
    (pack_dir / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def entry_bytes(entry: PackEntry, manifest: Manifest, pack_dir: Path) -> bytes:
    """One vector's bytes after checking its hash and its signature against the manifest."""
    path = pack_dir / entry.file
    if not path.is_file():
        raise SteerlabError(f"starter pack file {path} is missing: reinstall steerlab or run `make starter-pack`.")
    data = path.read_bytes()
    if sha256_hex(data) != entry.sha256:
        raise SteerlabError(f"{path} does not match the sha256 in the pack manifest: it was changed after signing.")
    card = check_upload(data, "vector", max_bytes=len(data)).card
    signing.verify(manifest.public_key, entry.signature, "vector", entry.ref, entry.sha256, card)
    return data


@dataclass
class InstallReport:
    installed: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # the store holds other content under the same ref: kept

    @property
    def total(self) -> int:
        return len(self.installed) + len(self.present) + len(self.conflicts)


def install_shipped_pack(
    store: Any, pack_dir: Path | None = None, log: Callable[[str], None] | None = None
) -> InstallReport:
    """Publish every verified vector of the pack into `store` (a LocalStore or RemoteStore) that is not there yet.

    Idempotent: an entry already there with the same content counts as present (re-signed in a local store when the
    pack was re-signed since). Published versions are immutable, so an entry whose ref holds other content (an older
    build, or one removed on purpose) is left as it is and reported.
    """
    from steerlab.hub.errors import Conflict, NotFound
    from steerlab.hub.store import Publication

    folder = pack_dir or shipped_dir()
    manifest = read_manifest(folder)
    report = InstallReport()
    for entry in manifest.entries:
        data = entry_bytes(entry, manifest, folder)
        try:
            held = store.show(entry.ref)
            same = held.sha256 == entry.sha256
            if same and held.signature != entry.signature and hasattr(store, "replace_signature"):
                store.replace_signature(entry.ref, entry.signature, manifest.public_key)
            (report.present if same else report.conflicts).append(entry.ref)
            continue
        except NotFound:
            pass
        pub = Publication(
            entry.ref, "vector", list(entry.tags), entry.description, entry.signature, manifest.public_key
        )
        try:
            store.publish(data, pub)
            report.installed.append(entry.ref)
        except Conflict:  # removed before (a tombstone) or published concurrently: the store's answer stands
            report.conflicts.append(entry.ref)
    if log:
        log(
            f"starter pack {manifest.namespace}@{manifest.version} (key {manifest.key_id}): {len(report.installed)} "
            f"installed, {len(report.present)} already there, {len(report.conflicts)} kept as the store has them"
        )
    return report


def manifest_pins(pack_dir: Path | None = None) -> dict[str, list[Key]]:
    """The pack's namespace trusted by the public key in the manifest that ships with the package (not by what a
    store says); none when the package ships no pack."""
    folder = pack_dir or shipped_dir()
    if not (folder / MANIFEST).is_file():
        return {}
    manifest = read_manifest(folder)
    return {manifest.namespace: [Key(manifest.key_id, manifest.public_key)]}


def is_default_store(store: Any) -> bool:
    """A local store at $STEERLAB_HOME/store (however its path was spelled), not a server or another folder."""
    from steerlab.defaults import store_root

    root = getattr(store, "root", None)
    return isinstance(root, Path) and root.resolve() == store_root().expanduser().resolve()


def ensure_shipped_pack(store: Any, pack_dir: Path | None = None) -> InstallReport | None:
    """Install the pack into a local store once per manifest (a marker in the store's root records it); None when
    this store already has this manifest installed, or the package ships no pack."""
    folder = pack_dir or shipped_dir()
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return None
    digest = sha256_hex(manifest_path.read_bytes())
    marker = Path(store.root) / MARKER
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")).get("manifest_sha256") == digest:
        return None
    report = install_shipped_pack(store, folder)
    marker.write_text(json.dumps({"manifest_sha256": digest, "entries": report.total}), encoding="utf-8")
    return report
