"""What the `steerlab hub` command modules share: the console, the common options, opening a store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from steerlab.errors import SteerlabError

if TYPE_CHECKING:
    from steerlab.hub.protocol import Store
    from steerlab.hub.store import LocalStore
    from steerlab.hub.trust import Trust

console = Console()

FromOpt = Annotated[str | None, typer.Option("--from", help="store folder or server URL (default: the local store)")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="STEERLAB_HUB_TOKEN", help="bearer token")]
RootOpt = Annotated[Path | None, typer.Option("--root", help="store folder (default: $STEERLAB_HOME/store)")]
CatalogOpt = Annotated[str | None, typer.Option("--catalog-url", help="SQLAlchemy URL of the catalogue (PostgreSQL)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
TagOpt = Annotated[list[str] | None, typer.Option("--tag", help="a tag (repeatable)")]
KeyOpt = Annotated[Path | None, typer.Option("--key", help="ed25519 signing key (default: your publisher key)")]
SignOpt = Annotated[bool, typer.Option("--sign/--no-sign", help="sign ref + hash + card with your key")]


def open_location(
    location: str | Path | None, token: str | None = None, catalog_url: str | None = None, tofu: bool = False
) -> Store:
    from steerlab.hub import is_url, open_store

    options: dict[str, Any] = {"catalog_url": catalog_url} if catalog_url and not is_url(location) else {}
    return open_store(location, token=token, tofu=tofu, **options)


def open_local(root: Path | None, catalog_url: str | None) -> LocalStore:
    """Commands that administer a store itself (verify, tokens) need a local one: a server's host runs them."""
    from steerlab.hub.store import LocalStore

    store = open_location(root, catalog_url=catalog_url)
    if not isinstance(store, LocalStore):
        raise SteerlabError(f"{store!r} is not a local store: run this on the machine that holds it, with --root.")
    return store


def trust_of(store: Any) -> Trust:
    from steerlab.hub.trust import Trust

    found = getattr(store, "trust", None)
    return found if isinstance(found, Trust) else Trust.load()
