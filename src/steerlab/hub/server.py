"""The store over HTTP (FastAPI): public or private reads, token-guarded writes, uploads streamed to a temp file.

Routes (OpenAPI schema at /openapi.json, browsable at /docs):
  GET    /api/v1/entries                          search / list (q, tag, base_model, kind, namespace, fit)
  GET    /api/v1/entries/{ns}/{name}              all versions
  GET    /api/v1/entries/{ns}/{name}/{version}    metadata and card ("latest" for the newest)
  GET    /api/v1/entries/{ns}/{name}/{version}/content   the bytes
  POST   /api/v1/entries/{ns}/{name}              upload (body = the file; ?version=, ?kind=, ?tag=, ?description=)
  DELETE /api/v1/entries/{ns}/{name}/{version}    withdraw a version
  GET    /api/v1/entries/{ns}/{name}/{version}/audit   the refusal audit attached to it ({"audit": null} if none)
  PUT    /api/v1/entries/{ns}/{name}/{version}/audit   attach one (body: the audit.json of `hub audit`; write token)
  GET    /api/v1/grants?namespace=NS              entitlements of a namespace (its admin)
  POST   /api/v1/grants                           grant {"target": "ns[/name]", "principal", "expires"} (admin)
  POST   /api/v1/grants/revoke                    revoke {"target", "principal"} (admin)
  POST   /api/v1/entries/{ns}/{name}/listing      {"visibility", "price", "terms"} for every version (admin)
  POST   /api/v1/orders                           purchase {"ref"}: an order for a licensed entry
  GET    /api/v1/orders[?namespace=NS]            your orders, or a namespace's (its admin)
  POST   /api/v1/orders/{id}/approve | reject     the owner's decision (admin)
  GET    /api/v1/pulls?namespace=NS               who pulled what under which right (admin)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Body, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from steerlab.errors import SteerlabError
from steerlab.guard.attach import MAX_RECORD_BYTES
from steerlab.hub.entry import Fit
from steerlab.hub.errors import TooLarge, Unauthorized, UnsupportedMediaType, status_of
from steerlab.hub.protocol import API, PUBLIC_KEY_HEADER, SIGNATURE_HEADER
from steerlab.hub.refs import check_name, parse_ref
from steerlab.hub.store import Access, LocalStore, Publication
from steerlab.hub.validate import DEFAULT_MAX_BYTES

if TYPE_CHECKING:
    from steerlab.guard.uploads import UploadScreen


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if value and scheme.lower() != "bearer":
        raise Unauthorized("the Authorization header must be 'Bearer <token>'.")
    return token.strip() or None


# An upload's body is the file itself; a form, a page or an image sent by mistake is refused before it is read.
UPLOAD_TYPES = {
    "vector": ("application/octet-stream",),
    "condition": ("application/octet-stream",),
    "kit": ("application/json", "application/octet-stream"),
}


def _check_content_type(request: Request, kind: str) -> None:
    given = request.headers.get("content-type")
    allowed = UPLOAD_TYPES.get(kind)
    if given is None or allowed is None:  # no header: the file as sent by curl --data-binary or httpx
        return
    if given.split(";")[0].strip().lower() not in allowed:
        raise UnsupportedMediaType(
            f"a {kind} upload is the file itself, sent as {' or '.join(allowed)} (or with no Content-Type), "
            f"not {given.split(';')[0].strip()!r}."
        )


def _ref(namespace: str, name: str, version: str | None = None) -> str:
    check_name(namespace, "namespace")
    check_name(name, "name")
    return f"{namespace}/{name}" + (f"@{version}" if version and version != "latest" else "")


def create_app(store: LocalStore, screen: UploadScreen | None = None) -> FastAPI:
    """`screen`: the guard's upload screen (steerlab.guard.uploads), None to store uploads unscreened."""
    app = FastAPI(title="steerlab Steer Store", version="1", description="Signed, content-addressed steering vectors.")

    @app.exception_handler(SteerlabError)
    async def refused(_request: Request, exc: SteerlabError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=status_of(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code in (404, 405):
            # Most often a name with a '/' in it, which makes a different (or no) route match.
            message = (
                f"no {request.method} route {request.url.path}: entries are read at {API}/entries/NAMESPACE/NAME"
                f"[/VERSION] and uploaded with POST to {API}/entries/NAMESPACE/NAME (names hold no '/')."
            )
        return JSONResponse({"error": message}, status_code=exc.status_code)

    def access(request: Request) -> Access:
        return store.access(_bearer(request))

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"ok": True}

    @app.get(f"{API}/entries")
    def search(
        request: Request,
        q: str | None = None,
        tag: str | None = None,
        base_model: str | None = None,
        kind: str | None = None,
        namespace: str | None = None,
        all_versions: bool = False,
        fit_hidden_size: int | None = None,
        fit_n_layers: int | None = None,
        fit_fingerprint: str = "",
        fit_name: str = "",
    ) -> dict[str, Any]:
        """Latest version of each entry matching every filter given (all versions with all_versions=true)."""
        fit = None
        if fit_hidden_size is not None and fit_n_layers is not None:
            fit = Fit(fit_hidden_size, fit_n_layers, fit_fingerprint, fit_name)
        found = store.search(q, tag, base_model, kind, fit, namespace, all_versions, access(request))
        return {"entries": [i.to_dict() for i in found]}

    @app.get(f"{API}/entries/{{namespace}}/{{name}}")
    def versions(namespace: str, name: str, request: Request) -> dict[str, Any]:
        return {"versions": [i.to_dict() for i in store.versions(_ref(namespace, name), access(request))]}

    @app.get(f"{API}/entries/{{namespace}}/{{name}}/{{version}}")
    def show(namespace: str, name: str, version: str, request: Request) -> dict[str, Any]:
        return store.show(_ref(namespace, name, version), access(request)).to_dict()

    @app.get(f"{API}/entries/{{namespace}}/{{name}}/{{version}}/content")
    def content(namespace: str, name: str, version: str, request: Request) -> Response:
        info, data = store.get_bytes(_ref(namespace, name, version), access=access(request))
        headers = {"x-steerlab-sha256": info.sha256, "x-steerlab-ref": info.ref}
        return Response(data, media_type="application/octet-stream", headers=headers)

    @app.post(f"{API}/entries/{{namespace}}/{{name}}", status_code=201)
    async def upload(
        namespace: str,
        name: str,
        request: Request,
        version: str | None = None,
        kind: str = "vector",
        tag: Annotated[list[str] | None, Query()] = None,
        description: str | None = None,
        visibility: str = "public",
        price: str = "",
        terms: str = "",
    ) -> dict[str, Any]:
        """Body: the vector (.safetensors) or kit (.json) file. Needs `Authorization: Bearer <namespace token>`."""
        ref = _ref(namespace, name, version)
        parse_ref(ref)
        who = await run_in_threadpool(access, request)
        store.check_write(namespace, who)  # refuse before reading a byte of the body
        _check_content_type(request, kind)
        pub = Publication(
            ref=ref,
            kind=kind,
            tags=tag or [],
            description=description,
            signature=request.headers.get(SIGNATURE_HEADER),
            public_key=request.headers.get(PUBLIC_KEY_HEADER),
            visibility=visibility,
            price=price,
            terms=terms,
        )
        return (await _receive(store, request, pub, who, screen)).to_dict()

    @app.delete(f"{API}/entries/{{namespace}}/{{name}}/{{version}}")
    def remove(namespace: str, name: str, version: str, request: Request) -> dict[str, Any]:
        return store.remove(_ref(namespace, name, version), access(request)).to_dict()

    @app.get(f"{API}/entries/{{namespace}}/{{name}}/{{version}}/audit")
    def audit(namespace: str, name: str, version: str, request: Request) -> dict[str, Any]:
        return {"audit": store.audit(_ref(namespace, name, version), access(request))}

    @app.put(f"{API}/entries/{{namespace}}/{{name}}/{{version}}/audit")
    async def attach_audit(namespace: str, name: str, version: str, request: Request) -> dict[str, Any]:
        ref = _ref(namespace, name, version)
        who = await run_in_threadpool(access, request)
        store.check_write(namespace, who)  # refuse before reading a byte of the body
        record = await _json_body(request, MAX_RECORD_BYTES)
        info = await run_in_threadpool(store.attach_audit, ref, record, who)
        return {"attached": info.ref, "sha256": info.sha256}

    _market_routes(app, store, access)
    return app


JsonBody = Annotated[dict[str, Any], Body()]


def _text(body: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise SteerlabError(f"the JSON body needs {key!r} (a string).")
    return value


def _market_routes(app: FastAPI, store: LocalStore, access: Any) -> None:
    """Grants, orders and the pull log (hub/market.py); every decision is the namespace admin's."""

    @app.get(f"{API}/grants")
    def entitlements(namespace: str, request: Request) -> dict[str, Any]:
        return {"entitlements": store.entitlements(namespace, access(request))}

    @app.post(f"{API}/grants", status_code=201)
    def grant(body: JsonBody, request: Request) -> dict[str, Any]:
        expires = _text(body, "expires", required=False)
        return store.grant(str(_text(body, "target")), str(_text(body, "principal")), expires, access(request))

    @app.post(f"{API}/entries/{{namespace}}/{{name}}/listing")
    def listing(namespace: str, name: str, body: JsonBody, request: Request) -> dict[str, Any]:
        visibility = str(_text(body, "visibility"))
        price, terms = _text(body, "price", required=False) or "", _text(body, "terms", required=False) or ""
        changed = store.set_listing(_ref(namespace, name), visibility, price, terms, access(request))
        return {"versions": [i.to_dict() for i in changed]}

    @app.post(f"{API}/grants/revoke")
    def revoke(body: JsonBody, request: Request) -> dict[str, Any]:
        count = store.revoke_grant(str(_text(body, "target")), str(_text(body, "principal")), access(request))
        return {"revoked": count}

    @app.post(f"{API}/orders", status_code=201)
    def purchase(body: JsonBody, request: Request) -> dict[str, Any]:
        return store.purchase(str(_text(body, "ref")), access(request))

    @app.get(f"{API}/orders")
    def orders(request: Request, namespace: str | None = None) -> dict[str, Any]:
        return {"orders": store.orders(namespace, access(request))}

    @app.post(f"{API}/orders/{{order_id}}/{{decision}}")
    def decide(order_id: int, decision: str, request: Request) -> dict[str, Any]:
        if decision not in ("approve", "reject"):
            raise SteerlabError(f"unknown decision {decision!r}: POST .../orders/ID/approve or .../reject.")
        return store.decide_order(order_id, decision == "approve", access(request))

    @app.get(f"{API}/pulls")
    def pulls(namespace: str, request: Request) -> dict[str, Any]:
        return {"pulls": store.pulls(namespace, access(request))}


async def _json_body(request: Request, limit: int) -> Any:
    """The request's JSON body, read up to `limit` bytes (a larger one is refused before it is all read)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"the body is over the limit of {limit} bytes.")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise SteerlabError(
            f"the body is not JSON ({exc}); send the audit.json that `steerlab hub audit` wrote."
        ) from exc


async def _receive(
    store: LocalStore, request: Request, pub: Publication, who: Access, screen: UploadScreen | None = None
) -> Any:
    """Stream the body into a temp file (never visible as an entry); publish only once it is whole and valid."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > store.max_bytes:
        raise TooLarge(f"upload of {declared} bytes is over the limit of {store.max_bytes} bytes.")
    incoming = store.blobs.open_incoming()
    try:
        async for chunk in request.stream():
            incoming.write(chunk)
            if incoming.size > store.max_bytes:
                raise TooLarge(f"upload is over the limit of {store.max_bytes} bytes.")
        data = incoming.read_back()
        if screen is not None:  # refused (nothing stored) or flagged before anything is published
            pub = await run_in_threadpool(screen.apply, data, pub, store)
        return await run_in_threadpool(store.publish, data, pub, who, incoming)
    finally:
        incoming.discard()  # after a client disconnect or a refusal: the temp file goes, nothing else was written


def serve(
    root: Path,
    host: str,
    port: int,
    catalog_url: str | None = None,
    max_bytes: int | None = None,
    screen: UploadScreen | None = None,
) -> None:
    import uvicorn

    store = LocalStore(root, catalog_url=catalog_url, max_bytes=max_bytes or DEFAULT_MAX_BYTES)
    uvicorn.run(create_app(store, screen), host=host, port=port, log_level="info")
