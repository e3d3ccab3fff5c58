"""`steerlab hub audit REF`: a vector's effect on refusals of harmful requests (steerlab.guard.audit)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
        bool, typer.Option(help="file the report with the entry in the local store (`hub show`)")
    ] = False,
) -> None:
    """Generate harmful requests unsteered, steered by REF, under the protective kit, and both; judge refusals."""
    from steerlab.evaluate.data import datasets_root, load_prompts, shuffled
    from steerlab.guard.audit import audit
    from steerlab.models import load_model

    if n < 1:
        raise typer.BadParameter("--n must be at least 1.")
    entry = _attachable(ref, source) if attach else None  # before minutes of generation
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
        from steerlab.guard.attach import attach_audit

        root, sha256, entry_ref = entry
        typer.echo(f"attached to {entry_ref}: {attach_audit(root, sha256, report.to_dict())}")


def _attachable(ref: str, source: str | None) -> tuple[Path, str, str]:
    """The local store root and content hash of the entry REF names (an audit attaches only to a store entry)."""
    from steerlab.address import parse_address
    from steerlab.errors import SteerlabError
    from steerlab.hub import open_store

    parsed = parse_address(ref)
    if parsed.kind != "store":
        raise SteerlabError(f"--attach needs a store ref (NAMESPACE/NAME[@VERSION]); {ref!r} is a {parsed.kind}.")
    store = open_store(source)
    root = getattr(store, "root", None)
    if root is None:
        raise SteerlabError("--attach files the report in a local store: run it where the store is, with --from DIR.")
    info = store.show(parsed.target)
    return Path(root), info.sha256, info.ref
