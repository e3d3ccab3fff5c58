"""What the two stores, the HTTP server and its client agree on: the Store Protocol, a Publication, the wire names.

LocalStore (a folder on this machine; the server wraps one) and RemoteStore (HTTP to `steerlab hub serve`) both
satisfy Store, so callers that take either (the CLI's hub commands, the server registry's --store, resolve) are typed
with it. Only the local store administers itself: tokens, private namespaces and `verify` are LocalStore's alone.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from steerlab.hub.entry import EntryInfo, Fit
    from steerlab.vector import Vector

__all__ = ["API", "PUBLIC_KEY_HEADER", "SIGNATURE_HEADER", "Publication", "Store"]

API = "/api/v1"
SIGNATURE_HEADER = "x-steerlab-signature"
PUBLIC_KEY_HEADER = "x-steerlab-public-key"


@dataclass
class Publication:
    """An upload with what its publisher says about it."""

    ref: str
    kind: str = "vector"
    tags: list[str] = field(default_factory=list)
    description: str | None = None
    signature: str | None = None
    public_key: str | None = None
    visibility: str = "public"  # public, private (namespace members and grantees) or licensed (needs an entitlement)
    price: str = ""  # a licensed listing's price, e.g. "25.00 EUR"
    terms: str = ""  # a licensed listing's licence terms (a name or URL)


@runtime_checkable
class Store(Protocol):
    """The calls a local and a remote store both answer. Every read checks the content's hash, card and signature."""

    def publish(self, data: bytes, pub: Publication) -> EntryInfo:
        """Validate and add one vector or kit; returns its catalogue entry (its version assigned if none was given)."""
        ...

    def show(self, ref: str) -> EntryInfo:
        """The catalogue entry of NAMESPACE/NAME[@VERSION] (the latest version without one)."""
        ...

    def versions(self, base: str) -> builtins.list[EntryInfo]:
        """Every live version of NAMESPACE/NAME, oldest first."""
        ...

    def get_bytes(
        self, ref: str, require_signed: bool = False, trusted_keys: Iterable[str] | None = None
    ) -> tuple[EntryInfo, bytes]:
        """The entry and its content, checked against each other (and against the trusted keys, when given)."""
        ...

    def get_vector(self, ref: str, require_signed: bool = False, trusted_keys: Iterable[str] | None = None) -> Vector:
        """A vector entry's content as a Vector."""
        ...

    def get_kit(self, ref: str, require_signed: bool = False, trusted_keys: Iterable[str] | None = None) -> Any:
        """A kit entry's content: its kit document (entries name their vectors by sha256 in the same store)."""
        ...

    def list(
        self, namespace: str | None = None, kind: str | None = None, all_versions: bool = False
    ) -> builtins.list[EntryInfo]:
        """The latest version of every visible entry (all versions with all_versions), optionally one namespace/kind."""
        ...

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
        """Entries matching all the filters given; `fits` (a LoadedModel or Fit) keeps what that model can load."""
        ...

    def remove(self, ref: str) -> EntryInfo:
        """Withdraw one version (NAMESPACE/NAME@VERSION); its version number is never reused."""
        ...

    def close(self) -> None:
        """Release the catalogue connection or the HTTP client."""
        ...

    def attach_audit(self, ref: str, record: Any) -> EntryInfo:
        """File a `hub audit` report (steerlab.guard.attach) with the entry REF names."""
        ...

    def audit(self, ref: str) -> dict[str, Any] | None:
        """The audit attached to the entry REF names, or None."""
        ...

    # ----- access to private and licensed entries (hub/market.py); the namespace admin's calls unless noted -----
    def grant(self, target: str, principal: str, expires: str | None = None) -> dict[str, Any]:
        """Entitle `principal` to NAMESPACE/NAME (every version) or a whole NAMESPACE, for `expires` ('30d')."""
        ...

    def set_listing(self, base: str, visibility: str, price: str = "", terms: str = "") -> builtins.list[EntryInfo]:
        """Make every live version of NAMESPACE/NAME public, private or licensed (at `price` under `terms`)."""
        ...

    def revoke_grant(self, target: str, principal: str) -> int:
        """Withdraw the principal's live grants to `target`; how many there were."""
        ...

    def entitlements(self, namespace: str) -> builtins.list[dict[str, Any]]:
        """Every grant and purchase in a namespace."""
        ...

    def purchase(self, ref: str) -> dict[str, Any]:
        """(The buyer's call.) An order for a licensed entry at its listed price and terms."""
        ...

    def orders(self, namespace: str | None = None) -> builtins.list[dict[str, Any]]:
        """A namespace's orders (its admin), or without one the orders the caller placed."""
        ...

    def decide_order(self, order_id: int, approve: bool) -> dict[str, Any]:
        """Approve (the buyer is entitled) or reject a pending order."""
        ...

    def pulls(self, namespace: str) -> builtins.list[dict[str, Any]]:
        """Who pulled which version of the namespace's entries, under which right."""
        ...
