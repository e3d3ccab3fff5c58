"""The FastAPI app: OpenAI-compatible routes, the steering catalogue, the slider page, errors in OpenAI's shape."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from steerlab.errors import SteerlabError
from steerlab.serve.access import allows
from steerlab.serve.errors import ApiError, error_body
from steerlab.serve.keys import ApiKey
from steerlab.serve.protocol import ChatRequest, CompletionRequest, SamplingFields
from steerlab.serve.service import Run, Service

STATIC = Path(__file__).parent / "static"
OPEN_PATHS = ("/", "/health")  # and /static/: the page and liveness need no key; everything else does


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith("/static/")


def create_app(service: Service) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        service.batcher.close()

    app = FastAPI(title="steerlab serve", lifespan=lifespan)
    app.state.service = service
    _errors(app)
    _authentication(app, service)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        stats = {**service.batcher.stats.as_dict(), "active": service.batcher.active}
        return {"status": "ok", "model": service.config.model_id, "batcher": stats}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": service.config.model_id, "object": "model", "created": 0, "owned_by": "steerlab"}
        return {"object": "list", "data": [card]}

    @app.get("/v1/steering")
    async def steering(request: Request) -> dict[str, Any]:
        catalogue = await asyncio.to_thread(service.registry.catalogue)
        key = _principal(request)
        if key is not None:  # a key sees what it may steer with
            catalogue["data"] = [item for item in catalogue["data"] if allows(key, item["id"])]
        return catalogue

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest, request: Request) -> Any:
        return await _complete(service, body, request, "chat")

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        return await _complete(service, body, request, "text")

    return app


def _authentication(app: FastAPI, service: Service) -> None:
    """With --api-keys, every path but the page and /health needs a valid key, checked before the body is read."""

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Any:
        if service.keys is not None and not _is_open(request.url.path):
            try:
                request.state.principal = service.keys.authenticate(request.headers.get("authorization"))
            except ApiError as exc:
                client = request.client.host if request.client else None
                service.log_unauthenticated(request.url.path, client, exc)
                return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
        return await call_next(request)


def _principal(request: Request) -> ApiKey | None:
    return getattr(request.state, "principal", None)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(SteerlabError)
    async def steerlab_error(_request: Request, exc: SteerlabError) -> JSONResponse:
        return JSONResponse(error_body(str(exc), "invalid_request_error", "invalid_request"), status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()]
        param = ".".join(str(p) for p in exc.errors()[0]["loc"][1:]) if exc.errors() else None
        message = "malformed request body: " + "; ".join(problems[:5])
        if any(e["loc"][1:2] == ("steering",) for e in exc.errors()):
            message += '. steering is a kit name or a list of {"vector": NAME, "scale": NUMBER, "layers": [INT, ...]}'

        return JSONResponse(error_body(message, "invalid_request_error", "malformed_body", param), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind, str(exc.status_code)), status_code=exc.status_code)


async def _complete(service: Service, body: ChatRequest | CompletionRequest, request: Request, kind: str) -> Any:
    endpoint = request.url.path
    client = request.client.host if request.client else None
    key = _principal(request)
    who = key.id if key is not None else None
    try:
        service.check_model(body.model)
        resolved = await asyncio.to_thread(service.registry.resolve, body.steering)
        service.admit(key, body.steering, resolved)
        if isinstance(body, ChatRequest):
            prompts = [service.chat_ids(body.messages)]
        else:
            prompts = [service.text_ids(p) for p in body.prompts()]
        run = service.start(body, resolved, prompts)
    except ApiError as exc:
        service.log(endpoint, body, None, "rejected", client, who, error=exc.code)
        raise
    if body.stream:
        events = _stream(service, body, run, kind, endpoint, client, who)
        return StreamingResponse(events, media_type="text/event-stream")
    try:
        async for _ in run.events():
            pass
    except ApiError as exc:
        service.log(endpoint, body, run, "error", client, who, error=exc.message)
        raise
    finally:
        run.cancel()  # no-op when finished; stops the rows when this handler is cancelled
    service.log(endpoint, body, run, "ok", client, who)
    return _response(service, run, kind)


def _response(service: Service, run: Run, kind: str) -> dict[str, Any]:
    if kind == "chat":
        choices = [
            {
                "index": c.index,
                "message": {"role": "assistant", "content": c.text},
                "finish_reason": c.finish_reason,
                "logprobs": None,
            }
            for c in run.choices
        ]
    else:
        choices = [
            {"index": c.index, "text": c.text, "finish_reason": c.finish_reason, "logprobs": None} for c in run.choices
        ]
    return {
        **_head(service, run, kind, chunk=False),
        "choices": choices,
        "usage": run.usage(),
        "steering": {"kit": run.resolved.label, "hash": run.resolved.steering_hash},
    }


def _head(service: Service, run: Run, kind: str, chunk: bool) -> dict[str, Any]:
    if kind == "chat":
        prefix, obj = "chatcmpl-", "chat.completion.chunk" if chunk else "chat.completion"
    else:
        prefix, obj = "cmpl-", "text_completion"
    return {"id": prefix + run.id, "object": obj, "created": run.created, "model": service.config.model_id}


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


async def _stream(
    service: Service,
    body: SamplingFields,
    run: Run,
    kind: str,
    endpoint: str,
    client: str | None,
    who: str | None,
) -> AsyncIterator[str]:
    """OpenAI's chunk format: a role chunk per choice (chat), text deltas, a finish chunk, optional usage, [DONE]."""
    usage_wanted = body.stream_options is not None and body.stream_options.include_usage
    status = "cancelled"
    try:
        if kind == "chat":
            for choice in run.choices:
                yield _sse(
                    _chunk(service, run, kind, choice.index, {"role": "assistant", "content": ""}, None, usage_wanted)
                )
        async for index, event in run.events():
            if event.text or event.finish_reason:
                delta = {"content": event.text} if event.text else {}
                yield _sse(_chunk(service, run, kind, index, delta, event.finish_reason, usage_wanted))
        if usage_wanted:
            yield _sse({**_head(service, run, kind, chunk=True), "choices": [], "usage": run.usage()})
        yield _sse("[DONE]")
        status = "ok"
    except ApiError as exc:
        status = "error"
        yield _sse(exc.body())
    finally:
        run.cancel()
        service.log(endpoint, body, run, status, client, who)


def _chunk(
    service: Service, run: Run, kind: str, index: int, delta: dict[str, Any], finish: str | None, usage: bool
) -> dict[str, Any]:
    if kind == "chat":
        choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
    else:
        choice = {"index": index, "text": delta.get("content", ""), "finish_reason": finish, "logprobs": None}
    chunk = {**_head(service, run, kind, chunk=True), "choices": [choice]}
    if usage:
        chunk["usage"] = None
    return chunk
