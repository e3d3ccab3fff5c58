"""`steerlab hub token / tokens / listing / grant / grants / purchase / orders / approve / reject / pulls`.

Tokens are made and revoked on the store's own machine (--root); grants, orders and the pull log work against a
folder or a server, with an admin token of the namespace (or as the folder's owner).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from steerlab.cli.hub_common import CatalogOpt, FromOpt, JsonOpt, RootOpt, TokenOpt, console, open_local, open_location

ExpiresOpt = Annotated[str | None, typer.Option("--expires", help="e.g. 12h, 30d, 2w (default: never)")]
NamespaceArg = Annotated[str, typer.Argument(help="the namespace")]


def _rows(rows: list[dict[str, Any]], as_json: bool, columns: tuple[str, ...], empty: str) -> None:
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print(empty)
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*(str(row.get(c) if row.get(c) not in (None, "") else "-") for c in columns))
    console.print(table)


def token_cmd(
    namespace: Annotated[
        str | None, typer.Argument(help="the namespace it acts in (omit, with --principal, for an identity token)")
    ] = None,
    scope: Annotated[str | None, typer.Option(help="read, write (default) or admin, in that namespace")] = None,
    principal: Annotated[str | None, typer.Option(help="who holds it (default: the namespace's name)")] = None,
    expires: ExpiresOpt = None,
    root: RootOpt = None,
    private: Annotated[
        bool | None, typer.Option("--private/--public", help="make the namespace's reads need a token")
    ] = None,
    catalog_url: CatalogOpt = None,
) -> None:
    """Create a token and print its secret (only its hash is stored; `steerlab hub tokens` lists it by id)."""
    from steerlab.hub.access import expiry

    secret, _ = open_local(root, catalog_url).issue_token(namespace, private, scope, principal, expiry(expires))
    typer.echo(secret)


def tokens_cmd(
    namespace: Annotated[str | None, typer.Option(help="only this namespace's tokens")] = None,
    revoke: Annotated[str | None, typer.Option("--revoke", help="revoke the token with this id (tok_...)")] = None,
    root: RootOpt = None,
    catalog_url: CatalogOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List a local store's tokens (never their secrets), or revoke one."""
    store = open_local(root, catalog_url)
    if revoke:
        console.print(f"[yellow]revoked[/yellow] token {store.revoke_token(revoke)['id']}")
        return
    columns = ("id", "principal", "namespace", "scope", "created_at", "expires_at", "revoked_at")
    _rows(store.tokens(namespace), as_json, columns, "no tokens")


def grant_cmd(
    target: Annotated[str, typer.Argument(help="NAMESPACE/NAME (every version), or NAMESPACE (all of it)")],
    principal: Annotated[str, typer.Argument(help="who may pull it (a token's principal)")],
    expires: ExpiresOpt = None,
    revoke: Annotated[bool, typer.Option("--revoke", help="withdraw this principal's grants instead")] = False,
    source: FromOpt = None,
    token: TokenOpt = None,
) -> None:
    """Entitle someone to a private or licensed entry (needs the namespace's admin token, or the folder)."""
    store = open_location(source, token)
    if revoke:
        console.print(f"revoked {store.revoke_grant(target, principal)} grant(s) of {target} to {principal}")
        return
    made = store.grant(target, principal, expires=expires)
    console.print(f"granted {made['entry']} to {made['principal']} (entitlement {made['id']}, "
                  f"expires {made['expires_at'] or 'never'})")  # fmt: skip


def listing_cmd(
    base: Annotated[str, typer.Argument(help="NAMESPACE/NAME (every version)")],
    visibility: Annotated[str, typer.Option(help="public, private or licensed")],
    price: Annotated[str, typer.Option(help="a licensed listing's price, e.g. '25.00 EUR'")] = "",
    terms: Annotated[str, typer.Option(help="a licensed listing's licence terms (a name or URL)")] = "",
    source: FromOpt = None,
    token: TokenOpt = None,
) -> None:
    """Change who may see and pull an entry (its namespace's admin); its content and signature stay."""
    changed = open_location(source, token).set_listing(base, visibility, price, terms)
    console.print(f"{base}: {len(changed)} version(s) now {visibility}" + (f" at {price}, {terms}" if price else ""))


def grants_cmd(
    namespace: NamespaceArg, source: FromOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """List a namespace's entitlements: grants and purchases (its admin)."""
    store = open_location(source, token)
    columns = ("id", "principal", "entry", "kind", "order", "granted_by", "expires_at", "revoked_at")
    _rows(store.entitlements(namespace), as_json, columns, "no entitlements")


def purchase_cmd(
    ref: Annotated[str, typer.Argument(help="NAMESPACE/NAME of a licensed entry")],
    source: FromOpt = None,
    token: TokenOpt = None,
) -> None:
    """Order a licence to an entry at its listed price and terms; no money moves here: the owner approves it."""
    store = open_location(source, token)
    order = store.purchase(ref)
    console.print(f"order {order['id']} for {order['entry']}: {order['price']}, terms {order['terms']}; "
                  f"{order['status']} ({order['processor_ref'] or order['processor']})")  # fmt: skip


def orders_cmd(
    namespace: Annotated[str | None, typer.Option(help="a namespace's orders (its admin); default: yours")] = None,
    source: FromOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List orders: those you placed, or those for a namespace you administer."""
    store = open_location(source, token)
    columns = ("id", "principal", "entry", "price", "status", "processor", "created_at", "decided_by")
    _rows(store.orders(namespace), as_json, columns, "no orders")


def _decide(order: int, approve: bool, source: str | None, token: str | None) -> None:
    store = open_location(source, token)
    decided = store.decide_order(order, approve)
    console.print(f"order {decided['id']} for {decided['entry']} by {decided['principal']}: {decided['status']}")


OrderArg = Annotated[int, typer.Argument(help="order id (`steerlab hub orders` lists them)")]


def approve_cmd(order: OrderArg, source: FromOpt = None, token: TokenOpt = None) -> None:
    """Approve a pending order (the owner's approval is the default settlement): its buyer may pull the entry."""
    _decide(order, True, source, token)


def reject_cmd(order: OrderArg, source: FromOpt = None, token: TokenOpt = None) -> None:
    """Reject a pending order."""
    _decide(order, False, source, token)


def pulls_cmd(
    namespace: NamespaceArg, source: FromOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Who pulled which version of a namespace's entries, under which right (its admin)."""
    store = open_location(source, token)
    columns = ("at", "principal", "token", "entry", "basis", "entitlement")
    _rows(store.pulls(namespace), as_json, columns, "no pulls")


def register_market(hub_app: typer.Typer) -> None:
    for name, command in (
        ("token", token_cmd),
        ("tokens", tokens_cmd),
        ("grant", grant_cmd),
        ("listing", listing_cmd),
        ("grants", grants_cmd),
        ("purchase", purchase_cmd),
        ("orders", orders_cmd),
        ("approve", approve_cmd),
        ("reject", reject_cmd),
        ("pulls", pulls_cmd),
    ):
        hub_app.command(name)(command)


