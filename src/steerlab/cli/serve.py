"""`steerlab serve`: the OpenAI-compatible server with per-request steering and the slider page; `serve keygen`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from steerlab.defaults import DEFAULT_MODEL

serve_app = typer.Typer(
    help="Serve a model over an OpenAI-compatible API; each request may carry its own steering.",
    invoke_without_command=True,
)


@serve_app.callback()
def serve_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="alias, local HF folder or .gguf file")] = DEFAULT_MODEL,
    kits: Annotated[Path | None, typer.Option(help="folder of vectors (NAME.safetensors) and kits (NAME.json)")] = None,
    store: Annotated[str | None, typer.Option(help="a vector store: folder or http(s) URL")] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    default_kit: Annotated[str | None, typer.Option(help="kit (or vector) for requests that name none")] = None,
    audit_log: Annotated[Path | None, typer.Option(help="JSONL audit log [default: in STEERLAB_HOME]")] = None,
    max_batch: Annotated[int, typer.Option(help="most sequences decoded together")] = 16,
    max_scale: Annotated[float, typer.Option(help="largest |scale| a request may use")] = 8.0,
    max_vectors: Annotated[int, typer.Option(help="most vectors one request may combine")] = 8,
    max_tokens: Annotated[int, typer.Option(help="largest max_tokens a request may ask for")] = 2048,
    dtype: Annotated[str | None, typer.Option(help="float32 (default), bfloat16 or float16")] = None,
    device: Annotated[str | None, typer.Option(help="cpu (default), cuda, ...")] = None,
    allow_unsigned: Annotated[
        bool, typer.Option(help="serve --store content not signed by a trusted key (`steerlab hub trust`)")
    ] = False,
    api_keys: Annotated[
        Path | None, typer.Option(help="key file (`steerlab serve keygen`): every /v1 request needs a valid key")
    ] = None,
    insecure: Annotated[
        bool, typer.Option(help="allow a non-loopback --host without --api-keys (anyone reaching it may steer)")
    ] = False,
    protect: Annotated[
        list[str] | None,
        typer.Option(help="protected direction (vector file or store ref, e.g. starter/refusal); repeatable"),
    ] = None,
    protect_threshold: Annotated[
        float | None, typer.Option(help="largest relative dose a request may cancel a protected direction by")
    ] = None,
    protect_norms: Annotated[
        Path | None,
        typer.Option(
            help="reference residual norms for --protect (`steerlab serve norms`) [default: measured on the served "
            "model; with --engine vllm, those shipped for it]"
        ),
    ] = None,
    engine: Annotated[
        str, typer.Option(help="transformers (steerlab's own batcher) or vllm (vLLM with the steerlab plugin)")
    ] = "transformers",
    max_steering_slots: Annotated[
        int | None, typer.Option(help="vllm: distinct kits in flight at once; more wait [default: --max-batch]")
    ] = None,
    max_model_len: Annotated[int, typer.Option(help="vllm: the longest prompt plus answer, in tokens")] = 2048,
    enforce_eager: Annotated[bool, typer.Option(help="vllm: no torch.compile (starts faster, runs slower)")] = False,
) -> None:
    """Serve a model over an OpenAI-compatible API; each request may carry its own steering."""
    if ctx.invoked_subcommand is not None:
        return
    from steerlab.cli.serve_vllm import check_engine

    check_engine(engine, device)  # before torch is imported: a wrong engine is said in a second
    from steerlab.defaults import steerlab_home
    from steerlab.guard.norms import read_norms
    from steerlab.guard.screen import DEFAULT_THRESHOLD
    from steerlab.models import load_model
    from steerlab.serve.registry import Limits
    from steerlab.serve.server import build_service, check_listen, serve

    check_listen(host, authenticated=api_keys is not None, insecure=insecure)  # before minutes of model loading
    if engine == "vllm":
        from steerlab.cli.serve_vllm import vllm_engine

        loaded, generator = vllm_engine(
            model,
            dtype,
            max_batch,
            max_steering_slots,
            max_model_len,
            enforce_eager,
            max_scale,
            max_vectors,
        )
    else:
        loaded, generator = load_model(model, dtype=dtype, device=device), None
    service = build_service(
        loaded,
        kits_dir=kits,
        store=store,
        require_trusted=store is not None and not allow_unsigned,
        default=default_kit,
        limits=Limits(max_scale=max_scale, max_vectors=max_vectors),
        audit_path=audit_log or steerlab_home() / "serve-audit.jsonl",
        max_batch=max_batch,
        model_id=model if not Path(model).exists() else loaded.name,
        max_tokens_cap=max_tokens,
        api_keys=api_keys,
        protect=protect or (),
        protect_threshold=DEFAULT_THRESHOLD if protect_threshold is None else protect_threshold,
        protect_norms=None if protect_norms is None else read_norms(protect_norms),
        engine=generator,
    )
    guarded = f", protecting {', '.join(service.guard.names)}" if service.guard is not None else ""
    keyed = f", {api_keys} keys required" if api_keys is not None else ""
    where = f"http://{host}:{port} (page at /, API at /v1{keyed}{guarded})"
    typer.echo(f"serving {service.config.model_id} with {engine} on {where}")
    serve(service, host=host, port=port)


@serve_app.command("keygen")
def keygen_cmd(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="who the key is for (the audit log's principal)")],
    keys: Annotated[Path, typer.Option("--keys", help="the key file to add it to (created if missing)")],
    allow: Annotated[
        list[str] | None,
        typer.Option(help="a name it may steer with: vector, kit, ns/* (a store namespace) or * [default: *]"),
    ] = None,
    max_scale: Annotated[float | None, typer.Option(help="its largest |scale| [default: the server's cap]")] = None,
    rate: Annotated[str | None, typer.Option(help="its rate limit, COUNT/PERIOD: 60/min, 10/s, 1000/day")] = None,
) -> None:
    """Add an API key to a key file: the secret is printed once; the file keeps only its sha256."""
    from steerlab.serve.keys import add_key

    key, secret = add_key(keys, key_id, list(allow or ["*"]), max_scale, rate)
    typer.echo(secret)
    limits = f"allow {', '.join(key.allow)}; max scale {key.max_scale or 'server cap'}; rate {key.rate or 'none'}"
    typer.echo(f"key {key.id!r} added to {keys} ({limits}). Keep the secret above: it is not stored.", err=True)


@serve_app.command("revoke-key")
def revoke_key_cmd(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="the principal whose key goes")],
    keys: Annotated[Path, typer.Option("--keys", help="the key file to take it out of")],
) -> None:
    """Take a key out of a key file; a server running on that file refuses it from its next request."""
    from steerlab.serve.keys import remove_key

    removed = remove_key(keys, key_id)
    typer.echo(f"key {removed.id!r} removed from {keys}; servers using this file refuse it from their next request.")


@serve_app.command("norms")
def norms_cmd(
    out: Annotated[Path, typer.Option("--out", help="the reference-norms JSON to write")],
    model: Annotated[str, typer.Option("--model", "-m", help="alias, local HF folder or .gguf file")] = DEFAULT_MODEL,
) -> None:
    """Measure a model's reference residual norms: what a store without that model needs to screen its uploads."""
    from steerlab.guard.norms import measure_reference_norms, write_norms
    from steerlab.models import load_model

    loaded = load_model(model)
    write_norms(out, loaded.name, loaded.fingerprint, measure_reference_norms(loaded))
    typer.echo(f"wrote the reference norms of {loaded.name} (fingerprint {loaded.fingerprint}) to {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(serve_app, name="serve")
