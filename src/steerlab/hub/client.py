"""RemoteStore: the Store calls (hub/protocol.py) over HTTP to `steerlab hub serve`; every pull is verified here."""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import httpx

from steerlab.errors import SteerlabError
from steerlab.hub.entry import EntryInfo, Fit
from steerlab.hub.errors import Conflict, Forbidden, HubError, NotFound, PaymentRequired, TooLarge, Unauthorized
from steerlab.hub.protocol import API, PUBLIC_KEY_HEADER, SIGNATURE_HEADER, Publication
from steerlab.hub.refs import parse_ref
from steerlab.hub.trust import Trust
from steerlab.hub.verify import check_content

if TYPE_CHECKING:
    from steerlab.vector import Vector

ERRORS: dict[int, type[HubError]] = {
    401: Unauthorized, 402: PaymentRequired, 403: Forbidden, 404: NotFound, 409: Conflict, 413: TooLarge,
}  # fmt: skip


class RemoteStore:
    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0, trust: Trust | None = None) -> None:
        self.url = url.rstrip("/")
        # Which signers pulls accept (steerlab.hub.open_store passes this machine's trust file and version record).
        self.trust = trust or Trust()
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __repr__(self) -> str:
        return f"RemoteStore({self.url!r})"

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, API + path, **kwargs)
        except httpx.HTTPError as exc:
            raise SteerlabError(f"cannot reach the store at {self.url}: {exc}. Is `steerlab hub serve` up?") from exc
        if response.status_code >= 400:
            raise ERRORS.get(response.status_code, HubError)(f"{self.url} refused: {_message(response)}")
        return response

    @staticmethod
    def _path(ref_text: str, latest: bool = True) -> str:
        ref = parse_ref(ref_text)
        return f"/entries/{ref.namespace}/{ref.name}" + (f"/{ref.version or 'latest'}" if latest else "")

    def publish(self, data: bytes, pub: Publication) -> EntryInfo:
        ref = parse_ref(pub.ref)
        params: dict[str, Any] = {"kind": pub.kind, "tag": list(pub.tags), "visibility": pub.visibility}
        params.update({key: value for key, value in (("price", pub.price), ("terms", pub.terms)) if value})
        if ref.version:
            params["version"] = ref.version
        if pub.description is not None:
            params["description"] = pub.description
        headers = {SIGNATURE_HEADER: pub.signature, PUBLIC_KEY_HEADER: pub.public_key} if pub.signature else {}
        path = f"/entries/{ref.namespace}/{ref.name}"
        response = self._call("POST", path, params=params, content=data, headers=headers)
        return EntryInfo.from_dict(response.json())

    def show(self, ref: str) -> EntryInfo:
        return EntryInfo.from_dict(self._call("GET", self._path(ref)).json())

    def versions(self, base: str) -> list[EntryInfo]:
        raw = self._call("GET", self._path(base, latest=False)).json()["versions"]
        return [EntryInfo.from_dict(r) for r in raw]

    def get_bytes(
        self, ref: str, require_signed: bool = False, trusted_keys: Iterable[str] | None = None
    ) -> tuple[EntryInfo, bytes]:
        """Metadata, then content of exactly that version; checked here, so a tampering server is caught: the
        signature names the entry, and a signed entry older than one verified before is refused as the latest."""
        requested = parse_ref(ref)
        info = self.show(ref)
        data = self._call("GET", self._path(info.ref) + "/content").content
        check_content(info, data, require_signed, trusted_keys, self.trust, requested)
        if info.signed:  # only a signed entry's version is the publisher's word
            if not requested.version:
                self.trust.seen.check_latest(self.url, requested.base, info.version)
            self.trust.seen.record(self.url, requested.base, info.version)
        return info, data

    def get_vector(self, ref: str, require_signed: bool = False, trusted_keys: Iterable[str] | None = None) -> Vector:
        from steerlab.vector import Vector

        info, data = self.get_bytes(ref, require_signed, trusted_keys)
        if info.kind != "vector":
            raise SteerlabError(f"{info.ref} is a {info.kind}, not a vector.")
        return Vector.from_bytes(data, f"{self.url}:{info.ref}")

    def get_kit(self, ref: str, require_signed: bool = False, trusted_keys: Iterable[str] | None = None) -> Any:
        info, data = self.get_bytes(ref, require_signed, trusted_keys)
        if info.kind != "kit":
            raise SteerlabError(f"{info.ref} is a {info.kind}, not a kit.")
        return json.loads(data)

    def list(
        self, namespace: str | None = None, kind: str | None = None, all_versions: bool = False
    ) -> list[EntryInfo]:
        return self.search(namespace=namespace, kind=kind, all_versions=all_versions)

    def search(
        self,
        text: str | None = None,
        tag: str | None = None,
        base_model: str | None = None,
        kind: str | None = None,
        fits: Fit | Any | None = None,
        namespace: str | None = None,
        all_versions: bool = False,
    ) -> builtins.list[EntryInfo]:
        params: dict[str, Any] = {"all_versions": all_versions}
        filters = {"q": text, "tag": tag, "base_model": base_model, "kind": kind, "namespace": namespace}
        params.update({key: value for key, value in filters.items() if value})
        if fits is not None:
            fit = fits if isinstance(fits, Fit) else Fit.of(fits)
            params.update(
                fit_hidden_size=fit.hidden_size,
                fit_n_layers=fit.n_layers,
                fit_fingerprint=fit.fingerprint,
                fit_name=fit.name,
            )
        raw = self._call("GET", "/entries", params=params).json()["entries"]
        return [EntryInfo.from_dict(r) for r in raw]

    # ----- access to private and licensed entries (the server's admin routes; hub/market.py) -----
    def grant(self, target: str, principal: str, expires: str | None = None) -> dict[str, Any]:
        body = {"target": target, "principal": principal, **({"expires": expires} if expires else {})}
        return dict(self._call("POST", "/grants", json=body).json())

    def set_listing(self, base: str, visibility: str, price: str = "", terms: str = "") -> builtins.list[EntryInfo]:
        body = {"visibility": visibility, "price": price or None, "terms": terms or None}
        raw = self._call("POST", self._path(base, latest=False) + "/listing", json=body).json()["versions"]
        return [EntryInfo.from_dict(r) for r in raw]

    def revoke_grant(self, target: str, principal: str) -> int:
        body = {"target": target, "principal": principal}
        return int(self._call("POST", "/grants/revoke", json=body).json()["revoked"])

    def entitlements(self, namespace: str) -> builtins.list[dict[str, Any]]:
        return list(self._call("GET", "/grants", params={"namespace": namespace}).json()["entitlements"])

    def purchase(self, ref: str) -> dict[str, Any]:
        return dict(self._call("POST", "/orders", json={"ref": ref}).json())

    def orders(self, namespace: str | None = None) -> builtins.list[dict[str, Any]]:
        params = {"namespace": namespace} if namespace else {}
        return list(self._call("GET", "/orders", params=params).json()["orders"])

    def decide_order(self, order_id: int, approve: bool) -> dict[str, Any]:
        return dict(self._call("POST", f"/orders/{int(order_id)}/{'approve' if approve else 'reject'}").json())

    def pulls(self, namespace: str) -> builtins.list[dict[str, Any]]:
        return list(self._call("GET", "/pulls", params={"namespace": namespace}).json()["pulls"])

    def attach_audit(self, ref: str, record: Any) -> EntryInfo:
        """File a `hub audit` report with the entry on the server (needs a write or admin token for its namespace)."""
        info = self.show(ref)
        self._call("PUT", self._path(info.ref) + "/audit", json=record)
        return info

    def audit(self, ref: str) -> dict[str, Any] | None:
        found = self._call("GET", self._path(ref) + "/audit").json().get("audit")
        return found if isinstance(found, dict) else None

    def remove(self, ref: str) -> EntryInfo:
        if not parse_ref(ref).version:
            raise SteerlabError(f"say which version to remove: {ref}@VERSION (versions are removed one by one).")
        return EntryInfo.from_dict(self._call("DELETE", self._path(ref)).json())


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return f"HTTP {response.status_code}: {json.dumps(body)[:300]}"
