"""`steerlab hub audit REF`: a vector's effect on refusals of harmful requests (steerlab.guard.audit)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from steerlab.cli.hub_common import TokenOpt
from steerlab.defaults import DEFAULT_MODEL

HARMFUL = Path("refusal-direction") / "splits" / "harmful_test.json"


def audit_cmd(
    ref: Annotated[str, typer.Argument(help="the vector or kit to audit: a store ref or a file address")],
    model: Annotated[str, typer.Option("--model", "-m", help="alias, local HF folder or .gguf file")] = DEFAULT_MODEL,
    source: Annotated[str | None, typer.Option("--from", help="store folder or URL [default: the local store]")] = None,
    protective: Annotated[str, typer.Option(help="the operator's protective kit or vector")] = "starter/refusal",
    prompts: Annotated[
        Path | None, typer.Option(help=f"harmful requests (JSON/JSONL/TXT) [default: {HARMFUL} of the datasets]")
    ] = None,
    n: Annotated[int, typer.Option("--n", help="how many requests (a seeded sample)")] = 32,
    max_new_tokens: Annotated[int, typer.Option(help="tokens generated per answer")] = 48,
    out: Annotated[Path, typer.Option("--out", help="folder for audit.json and audit.md")] = Path("audit"),
    attach: Annotated[
        bool, typer.Option(help="file the report with the entry, in the store folder or on the server (`hub show`)")
    ] = False,
    token: TokenOpt = None,
) -> None:
    """Generate harmful requests unsteered, steered by REF, under the protective kit, and both; judge refusals."""
    from steerlab.evaluate.data import datasets_root, load_prompts, shuffled
    from steerlab.guard.audit import audit
    from steerlab.models import load_model

    if n < 1:
        raise typer.BadParameter("--n must be at least 1.")
    entry = _attachable(ref, source, token) if attach else None  # before minutes of generation
    path = prompts or datasets_root(("refusal-direction",)) / HARMFUL
    chosen = shuffled(load_prompts(path), seed=0)[:n]
    loaded = load_model(model)
    report = audit(loaded, ref, chosen, store=source, protective=protective, max_new_tokens=max_new_tokens)
    json_path, md_path = report.write(out)
    for condition, (rate, lo, hi) in report.rates.items():
        typer.echo(f"{condition:>18}: refuses {rate:.0%} [{lo:.0%}, {hi:.0%}]")
    effect = report.effects["vector"]
    typer.echo(f"effect of {ref} on refusals: {effect[0]:+.3f} [{effect[1]:+.3f}, {effect[2]:+.3f}]")
    typer.echo(f"wrote {md_path} and {json_path}")
    if entry is not None:
        store, entry_ref = entry
        attached = store.attach_audit(entry_ref, report.to_dict())
        typer.echo(f"attached to {attached.ref} in {store} (sha256 {attached.sha256[:12]})")


def _attachable(ref: str, source: str | None, token: str | None) -> tuple[Any, str]:
    """The store and exact version REF names (an audit attaches only to a store entry), checked before generating:
    a server takes the report only with a write or admin token for the entry's namespace."""
    from steerlab.address import parse_address
    from steerlab.errors import SteerlabError
    from steerlab.hub import is_url, open_store

    parsed = parse_address(ref)
    if parsed.kind != "store":
        raise SteerlabError(f"--attach needs a store ref (NAMESPACE/NAME[@VERSION]); {ref!r} is a {parsed.kind}.")
    if is_url(source) and not token:
        namespace = parsed.target.split("/")[0]
        raise SteerlabError(
            f"--attach to the server {source} needs a write or admin token for namespace {namespace!r} (--token, "
            "or STEERLAB_HUB_TOKEN)."
        )
    store = open_store(source, token=token)
    return store, store.show(parsed.target).ref
