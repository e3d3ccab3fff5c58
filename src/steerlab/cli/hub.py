"""`steerlab hub ...`: the Steer Store from the command line; every store is a folder or a server URL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from steerlab.cli.hub_common import (
    CatalogOpt,
    FromOpt,
    JsonOpt,
    KeyOpt,
    RootOpt,
    SignOpt,
    TagOpt,
    TokenOpt,
    console,
    open_local,
    open_location,
    trust_of,
)
from steerlab.errors import SteerlabError

if TYPE_CHECKING:
    from steerlab.hub.entry import EntryInfo
    from steerlab.hub.trust import Trust

hub_app = typer.Typer(help="The Steer Store: publish, find, pull and verify vectors and kits.", no_args_is_help=True)
VisibilityOpt = Annotated[
    str, typer.Option(help="public, private (namespace members and grantees) or licensed (pull needs an entitlement)")
]
PriceOpt = Annotated[str, typer.Option(help="a licensed listing's price, e.g. '25.00 EUR'")]
TermsOpt = Annotated[str, typer.Option(help="a licensed listing's licence terms (a name or URL)")]


def _table(entries: list[EntryInfo], trust: Trust) -> Table:
    table = Table("entry", "kind", "base model", "tags", "signed", "access", "effect", "description")
    for info in entries:
        effect = info.metrics.get("accuracy")
        table.add_row(
            info.ref,
            info.kind,
            info.base_model or "-",
            ",".join(info.tags),
            trust.status(info),  # the key id computed here from the key, never the store's key_id
            info.visibility + (f" {info.price}" if info.price else ""),
            "-" if effect is None else f"acc {effect:.2f} @ L{info.metrics.get('best_layer', '?')}{_chance(info)}",
            (info.description or "")[:60],
        )
    return table


def _chance(info: EntryInfo) -> str:
    return " (at chance)" if info.metrics.get("at_chance") else ""


def _print_entries(entries: list[EntryInfo], as_json: bool, trust: Trust) -> None:
    if as_json:
        typer.echo(json.dumps([info.to_dict() for info in entries], indent=2))
    elif entries:
        console.print(_table(entries, trust))
    else:
        console.print("no entries")


def _publish(
    store: Any, file: Path, name: str, tags: list[str], description: str | None, key: Path | None, sign: bool,
    listing: tuple[str, str, str] = ("public", "", ""),
) -> None:  # fmt: skip
    from steerlab.hub.publish import prepare, publish

    data, pub = prepare(file, name, tags, description)
    pub.visibility, pub.price, pub.terms = listing
    info = publish(store, data, pub, key, sign)
    signed = f"signed by {info.key_id}" if info.key_id else "unsigned"
    detail = f"{info.kind}, {info.size} bytes, sha256 {info.sha256[:12]}, {signed}"
    console.print(f"[green]published[/green] {info.ref} ({detail})")


def add_cmd(
    file: Annotated[Path, typer.Argument(help="a vector or condition (.safetensors) or a kit (.json) file")],
    name: Annotated[str, typer.Option("--name", help="NAMESPACE/NAME[@VERSION] (next patch version if omitted)")],
    root: RootOpt = None,
    tag: TagOpt = None,
    description: Annotated[str | None, typer.Option(help="default: the card's description")] = None,
    key: KeyOpt = None,
    sign: SignOpt = True,
    catalog_url: CatalogOpt = None,
    visibility: VisibilityOpt = "public",
    price: PriceOpt = "",
    terms: TermsOpt = "",
) -> None:
    """Add a file to the local store."""
    store = open_location(root, catalog_url=catalog_url)
    _publish(store, file, name, tag or [], description, key, sign, (visibility, price, terms))


def push_cmd(
    file: Annotated[Path, typer.Argument(help="a vector or condition (.safetensors) or a kit (.json) file")],
    to: Annotated[str | None, typer.Option("--to", help="server URL or store folder (default: local store)")] = None,
    name: Annotated[str, typer.Option("--name", help="NAMESPACE/NAME[@VERSION]")] = "",
    token: TokenOpt = None,
    tag: TagOpt = None,
    description: Annotated[str | None, typer.Option(help="default: the card's description")] = None,
    key: KeyOpt = None,
    sign: SignOpt = True,
    visibility: VisibilityOpt = "public",
    price: PriceOpt = "",
    terms: TermsOpt = "",
) -> None:
    """Publish a file to a server (needs the namespace's token) or a store folder."""
    if not name:
        raise SteerlabError("say where to publish: --name NAMESPACE/NAME[@VERSION].")
    _publish(open_location(to, token), file, name, tag or [], description, key, sign, (visibility, price, terms))


def list_cmd(
    source: FromOpt = None,
    namespace: Annotated[str | None, typer.Option(help="only this namespace")] = None,
    kind: Annotated[str | None, typer.Option(help="vector, kit or condition")] = None,
    all_versions: Annotated[bool, typer.Option("--all-versions", help="every version, not just the latest")] = False,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List entries (latest version of each)."""
    store = open_location(source, token)
    _print_entries(store.list(namespace=namespace, kind=kind, all_versions=all_versions), as_json, trust_of(store))


def search_cmd(
    text: Annotated[str | None, typer.Argument(help="words to find in names, descriptions, tags, models")] = None,
    tag: Annotated[str | None, typer.Option(help="only entries with this tag")] = None,
    base_model: Annotated[str | None, typer.Option(help="only vectors for this model id")] = None,
    fits: Annotated[str | None, typer.Option(help="only what this model (alias/folder/.gguf) can load")] = None,
    source: FromOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search by text, tag, base model, or what fits a model."""
    fit = None
    if fits:
        from steerlab.hub.entry import Fit
        from steerlab.models import load_model

        fit = Fit.of(load_model(fits))
    store = open_location(source, token)
    _print_entries(store.search(text, tag=tag, base_model=base_model, fits=fit), as_json, trust_of(store))


def show_cmd(
    ref: Annotated[str, typer.Argument(help="NAMESPACE/NAME[@VERSION]")],
    source: FromOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one entry: its metadata, signature, versions and full card."""
    store = open_location(source, token)
    info = store.show(ref)
    if as_json:
        typer.echo(json.dumps(info.to_dict(), indent=2))
        return
    versions = ", ".join(v.version for v in store.versions(f"{info.namespace}/{info.name}"))
    console.print(f"[bold]{info.ref}[/bold] ({info.kind}) - {info.description or 'no description'}")
    console.print(f"versions: {versions}")
    model = f"{info.base_model or '-'} ({info.fingerprint or 'no fingerprint'})"
    console.print(f"base model: {model}, hidden size {info.hidden_size}")
    console.print(f"sha256 {info.sha256}, {info.size} bytes, published {info.published_at}, created {info.created_at}")
    signed = f"key {trust_of(store).status(info)}" if info.signed else "unsigned"
    console.print(f"signature: {signed} (not checked until pulled); tags: {', '.join(info.tags) or '-'}")
    console.print(f"author: {info.author or '-'}, license: {info.license or '-'}; effect: {json.dumps(info.metrics)}")
    listed = f"; licence terms: {info.terms}; price: {info.price}" if info.visibility == "licensed" else ""
    console.print(f"access: {info.visibility}{listed}")
    _print_audit(store, info)
    console.print_json(json.dumps(info.card))


def _print_audit(store: Any, info: EntryInfo) -> None:
    """The summary of a refusal audit attached to this content (`hub audit --attach`), local or on a server."""
    from steerlab.guard.attach import summary

    record = store.audit(info.ref)
    if record is not None:
        console.print(summary(record))


def pull_cmd(
    ref: Annotated[str, typer.Argument(help="NAMESPACE/NAME[@VERSION] (latest if no version)")],
    source: FromOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="file to write (default: NAME.safetensors)")] = None,
    require_signed: Annotated[bool, typer.Option("--require-signed", help="refuse unsigned content")] = False,
    trusted_key: Annotated[
        list[str] | None,
        typer.Option("--trusted-key", help="accept only this signer: a key id or public key (repeatable)"),
    ] = None,
    tofu: Annotated[bool, typer.Option("--tofu", help="pin the signer's key if the namespace has no pin yet")] = False,
    token: TokenOpt = None,
) -> None:
    """Download one entry, verifying its hash, card, signature and signer, and write it atomically.

    Pinned namespaces (`steerlab hub trust`) refuse other keys; revoked keys are refused."""
    from steerlab.hub.blobs import BlobStore

    store = open_location(source, token, tofu=tofu)
    info, data = store.get_bytes(ref, require_signed=require_signed, trusted_keys=trusted_key)
    target = out or Path(f"{info.name}.{'json' if info.kind == 'kit' else 'safetensors'}")
    if info.kind == "kit":  # with its vectors (found by sha256 in the same store), so the kit file loads
        from steerlab.hub.content import fetch_kit, write_kit

        stored = fetch_kit(store, info, data, require_signed=require_signed, trusted_keys=trusted_key)
        for path in write_kit(stored, target)[1:]:
            console.print(f"[green]pulled[/green] {path.name} beside it")
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        BlobStore.write_file(target, data)
    signed = f"signature by {trust_of(store).status(info)} verified" if info.signed else "unsigned"
    console.print(f"[green]pulled[/green] {info.ref} -> {target} (sha256 {info.sha256[:12]} verified, {signed})")


def rm_cmd(
    ref: Annotated[str, typer.Argument(help="NAMESPACE/NAME@VERSION")],
    source: FromOpt = None,
    token: TokenOpt = None,
) -> None:
    """Withdraw one version (its version number is never reused)."""
    info = open_location(source, token).remove(ref)
    console.print(f"[yellow]removed[/yellow] {info.ref}")


def verify_cmd(
    root: RootOpt = None,
    clean: Annotated[bool, typer.Option("--clean", help="delete stale temp files and unreferenced blobs")] = False,
    catalog_url: CatalogOpt = None,
) -> None:
    """Check a whole local store: every blob's hash, card and signature. Exit status 1 on any problem."""
    report = open_local(root, catalog_url).verify(clean=clean)
    for note in report.notes:
        console.print(f"note: {note}")
    for problem in report.problems:
        console.print(f"[red]problem:[/red] {problem}")
    console.print(f"checked {report.checked} entries: {'clean' if report.ok else f'{len(report.problems)} problem(s)'}")
    if not report.ok:
        raise typer.Exit(1)


def keygen_cmd(
    out: Annotated[Path | None, typer.Option("--out", help="key file (default: your publisher key)")] = None,
) -> None:
    """Create an ed25519 signing key (if missing) and print its key id."""
    from steerlab.hub import signing
    from steerlab.hub.publish import default_key_path

    path = out or default_key_path()
    key = signing.load_or_create_key(path)
    public = signing.public_key_b64(key)
    typer.echo(f"{signing.key_id(public)}  {path}")
    typer.echo(f"public key: {public}  (what others pin: steerlab hub trust NAMESPACE KEY)")


def trust_cmd(
    namespace: Annotated[str | None, typer.Argument(help="namespace to pin a key for")] = None,
    key: Annotated[str | None, typer.Argument(help="key id or public key, as `steerlab hub keygen` prints")] = None,
    note: Annotated[str, typer.Option(help="why this key is trusted (kept in the trust file)")] = "",
    revoke: Annotated[str | None, typer.Option("--revoke", help="revoke this key (id or public key)")] = None,
    reason: Annotated[str, typer.Option(help="why the key is revoked")] = "",
    tofu: Annotated[
        bool | None, typer.Option("--tofu/--no-tofu", help="pin the first key seen for namespaces without a pin")
    ] = None,
    show: Annotated[bool, typer.Option("--list", help="list pins and revoked keys (the default)")] = False,
    source: Annotated[
        str | None, typer.Option("--from", help="with --list: also list this store's entries by revoked keys")
    ] = None,
    token: TokenOpt = None,
) -> None:
    """Pin publisher keys per namespace, revoke keys, list them: the trust file under $STEERLAB_HOME.

    Rotation: pin the publisher's new key beside the old one, then revoke the old one."""
    from steerlab.hub.trust import Key, TrustFile

    trust = TrustFile.load()
    if namespace and not key:
        raise SteerlabError(f"say which key to trust for {namespace!r}: steerlab hub trust {namespace} KEY.")
    if namespace and key:
        pin = trust.pin(namespace, Key.parse(key), note)
        strength = "public key" if pin.key.public_key else "key id"
        console.print(f"pinned {pin.key.key_id} ({strength}) for namespace {namespace!r} in {trust.path}")
    if revoke:
        console.print(f"[yellow]revoked[/yellow] {trust.revoke(Key.parse(revoke), reason).key_id} in every namespace")
    if tofu is not None:
        trust.tofu = tofu
        console.print(f"trust on first use is {'on' if tofu else 'off'}")
    if (namespace and key) or revoke or tofu is not None:
        trust.save()
    if show or not ((namespace and key) or revoke or tofu is not None):
        _print_trust(trust, open_location(source, token) if source else None)


def _print_trust(trust: Any, store: Any) -> None:
    from steerlab.hub import signing

    console.print(f"trust file {trust.path}; trust on first use {'on' if trust.tofu else 'off'}")
    for namespace, pins in sorted(trust.pins.items()):
        for pin in pins:
            revoked = " REVOKED" if pin.key.key_id in trust.revoked else ""
            console.print(f"  {namespace}: {pin.key.key_id}{revoked} ({pin.source}, {pin.added_at}) {pin.note}")
    for revocation in trust.revoked.values():
        console.print(f"revoked {revocation.key_id} on {revocation.revoked_at} {revocation.reason}")
    if store is None:
        return
    signed = [i for i in store.list(all_versions=True) if i.public_key]
    refused = [i for i in signed if signing.key_id(i.public_key or "") in trust.revoked]
    for info in refused:
        console.print(f"[red]refused[/red] {info.ref}: signed by revoked key {signing.key_id(info.public_key or '')}")
    console.print(f"{len(refused)} entr{'y' if len(refused) == 1 else 'ies'} in {store} signed by revoked keys")


def resign_cmd(
    ref: Annotated[str, typer.Argument(help="NAMESPACE/NAME@VERSION")],
    key: KeyOpt = None,
    root: RootOpt = None,
    catalog_url: CatalogOpt = None,
) -> None:
    """Re-sign one version of a local store with another key (a key rotation); its content does not change."""
    from steerlab.hub import signing
    from steerlab.hub.publish import default_key_path

    store = open_local(root, catalog_url)
    info = store.show(ref)
    private = signing.load_key(key or default_key_path())
    signature = signing.sign(private, info.kind, info.ref, info.sha256, info.card)
    new = store.replace_signature(info.ref, signature, signing.public_key_b64(private))
    console.print(f"re-signed {new.ref} with key {new.key_id}")


def serve_cmd(
    root: RootOpt = None,
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8765,
    catalog_url: CatalogOpt = None,
    max_bytes: Annotated[int | None, typer.Option(help="largest upload accepted, in bytes")] = None,
    protect: Annotated[
        list[str] | None,
        typer.Option(help="screen uploads against this protected direction (file or ref, e.g. starter/refusal)"),
    ] = None,
    safety_policy: Annotated[
        str, typer.Option(help="flag: store with a warning tag and description; refuse: reject, store nothing")
    ] = "flag",
    protect_threshold: Annotated[float | None, typer.Option(help="largest relative dose of cancellation")] = None,
    protect_norms: Annotated[
        Path | None, typer.Option(help="reference norms (`steerlab serve norms`) [default: shipped ones]")
    ] = None,
) -> None:
    """Serve a store over HTTP (REST API; OpenAPI schema at /openapi.json)."""
    from steerlab.hub import default_root
    from steerlab.hub.server import serve

    screen = _upload_screen(protect or [], safety_policy, protect_threshold, protect_norms)
    serve(root or default_root(), host, port, catalog_url, max_bytes, screen)


def _upload_screen(protect: list[str], policy: str, threshold: float | None, norms: Path | None) -> Any:
    if not protect:
        return None
    from steerlab.guard.norms import read_norms
    from steerlab.guard.screen import DEFAULT_THRESHOLD
    from steerlab.guard.uploads import UploadScreen

    measured = read_norms(norms) if norms is not None else None
    return UploadScreen.build(protect, policy, DEFAULT_THRESHOLD if threshold is None else threshold, measured)


def register(app: typer.Typer) -> None:
    from steerlab.cli.audit import audit_cmd
    from steerlab.cli.hub_market import register_market

    for name, command in (
        ("add", add_cmd),
        ("list", list_cmd),
        ("search", search_cmd),
        ("show", show_cmd),
        ("pull", pull_cmd),
        ("push", push_cmd),
        ("rm", rm_cmd),
        ("verify", verify_cmd),
        ("keygen", keygen_cmd),
        ("trust", trust_cmd),
        ("resign", resign_cmd),
        ("serve", serve_cmd),
        ("audit", audit_cmd),
    ):
        hub_app.command(name)(command)
    register_market(hub_app)
    app.add_typer(hub_app, name="hub")
