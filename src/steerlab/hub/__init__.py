"""The Steer Store: a content-addressed, signed, searchable store of vectors and kits, local or behind a server."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerlab.hub.refs import Ref, Version, parse_ref

if TYPE_CHECKING:
    from steerlab.hub.client import RemoteStore
    from steerlab.hub.store import LocalStore

__all__ = ["Ref", "Version", "default_root", "open_store", "parse_ref"]


def default_root() -> Path:
    from steerlab.defaults import store_root

    return store_root()


def is_url(location: str | Path | None) -> bool:
    return isinstance(location, str) and location.startswith(("http://", "https://"))


def open_store(
    path_or_url: str | Path | None = None,
    token: str | None = None,
    require_trusted: bool = False,
    tofu: bool = False,
    **options: Any,
) -> LocalStore | RemoteStore:
    """A store at a folder (default $STEERLAB_HOME/store) or behind a server URL; both answer the same calls.

    Reads obey this machine's trust file (hub/trust.py): pinned namespaces refuse other keys, revoked keys are
    refused; `require_trusted` refuses anything not signed by a trusted key, `tofu` pins the first key seen.
    """
    from steerlab.hub.trust import Trust

    trust = options.pop("trust", None) or Trust.load(required=require_trusted, tofu=tofu)
    if is_url(path_or_url):
        from steerlab.hub.client import RemoteStore

        return RemoteStore(str(path_or_url), token=token, trust=trust, **options)
    from steerlab.hub.starter_pack import ensure_shipped_pack, is_default_store, manifest_pins
    from steerlab.hub.store import LocalStore

    store = LocalStore(Path(path_or_url) if path_or_url else default_root(), token=token, trust=trust, **options)
    if is_default_store(store):  # the default local store holds the shipped starter pack from its first use
        trust.builtin = {**trust.builtin, **manifest_pins()}  # its namespace pinned by the package, not the store
        ensure_shipped_pack(store)
    return store
