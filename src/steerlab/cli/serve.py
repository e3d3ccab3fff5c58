"""`steerlab serve`: the OpenAI-compatible server with per-request steering and the slider page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from steerlab.defaults import DEFAULT_MODEL


def serve_cmd(
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
) -> None:
    """Serve a model over an OpenAI-compatible API; each request may carry its own steering."""
    from steerlab.defaults import steerlab_home
    from steerlab.models import load_model
    from steerlab.serve.registry import Limits
    from steerlab.serve.server import build_service, serve

    loaded = load_model(model, dtype=dtype, device=device)
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
    )
    typer.echo(f"serving {service.config.model_id} on http://{host}:{port} (page at /, API at /v1)")
    serve(service, host=host, port=port)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
