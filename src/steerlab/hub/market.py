"""Listings, entitlements and orders: who may pull a private or licensed entry, and how a buyer comes to.

An entry is public (anyone pulls it), private (only its namespace's token holders and grantees see it) or licensed
(everyone sees the listing, its licence terms and price; pulling needs an entitlement). An entitlement is granted by
the namespace's admin (`steerlab hub grant`), or made when an order (`steerlab hub purchase`) is approved.

Payment is not done here. An order is handed to a PaymentProcessor: the one shipped, OwnerApproval, takes no money and
leaves the order pending until the owner approves it (`steerlab hub approve`). A real processor plugs in by
implementing PaymentProcessor (`LocalStore(payments=...)`): `start` opens a checkout with the provider and returns
its reference, and whatever receives the provider's confirmation calls `LocalStore.settle_order(order_id, ...)`,
which records the entitlement exactly as an approval does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import or_, select

from steerlab.errors import SteerlabError
from steerlab.hub.access import aware, iso
from steerlab.hub.catalog import Entitlement, Order
from steerlab.hub.refs import check_name

VISIBILITIES = ("public", "private", "licensed")
PRICE_RE = re.compile(r"^\d{1,9}(\.\d{1,2})? [A-Z]{3}$")
MAX_TERMS = 2000


@dataclass(frozen=True)
class Listing:
    visibility: str = "public"
    price: str = ""
    terms: str = ""

    def checked(self) -> Listing:
        if self.visibility not in VISIBILITIES:
            raise SteerlabError(f"invalid visibility {self.visibility!r}: use one of {', '.join(VISIBILITIES)}.")
        if self.visibility != "licensed":
            if self.price or self.terms:
                raise SteerlabError("a price and licence terms belong to a licensed listing (--visibility licensed).")
            return self
        if not PRICE_RE.fullmatch(self.price):
            raise SteerlabError(f"a licensed listing needs a price like '25.00 EUR' (amount, space, currency); got "
                                f"{self.price!r}.")  # fmt: skip
        if not self.terms.strip() or len(self.terms) > MAX_TERMS:
            raise SteerlabError(f"a licensed listing needs its licence terms (a name or URL, at most {MAX_TERMS} "
                                "characters): --terms.")  # fmt: skip
        return self


class PaymentProcessor(Protocol):
    """Where a payment provider plugs in. `start` is called once per new order and returns (status, reference):
    status 'pending' until the provider (or the owner) settles it, or 'approved' when it settles at once."""

    name: str

    def start(self, order: Order) -> tuple[str, str]: ...


class OwnerApproval:
    """No money moves: the order waits for the namespace admin's `steerlab hub approve ORDER`."""

    name = "owner-approval"

    def start(self, order: Order) -> tuple[str, str]:
        return "pending", f"awaiting approval by an admin of {order.namespace!r}"


def may_see(
    namespace: str, name: str, visibility: str, access: Any, private: set[str], entitled: set[tuple[str, str]]
) -> bool:
    """Members of the namespace see everything in it; grantees their entries; others what is neither in a private
    namespace nor a private entry (licensed listings are seen by all: pulling them is what needs a right)."""
    if access.can_read(namespace) or (namespace, name) in entitled or (namespace, "*") in entitled:
        return True
    return namespace not in private and visibility != "private"


def active(session: Any, principal: str | None, namespace: str, name: str) -> Entitlement | None:
    """The principal's live entitlement to NAMESPACE/NAME (or to the whole namespace), if any."""
    if not principal:
        return None
    rows = session.scalars(
        select(Entitlement).where(
            Entitlement.principal == principal,
            Entitlement.namespace == namespace,
            or_(Entitlement.name == name, Entitlement.name == "*"),
            Entitlement.revoked_at.is_(None),
        )
    ).all()
    now = datetime.now(UTC)
    live = [row for row in rows if not _expired(row, now)]
    return live[0] if live else None


def _expired(row: Entitlement, now: datetime) -> bool:
    expires = aware(row.expires_at)
    return expires is not None and expires <= now


def entitled_names(session: Any, principal: str | None) -> set[tuple[str, str]]:
    """(namespace, name or '*') of every live entitlement the principal holds."""
    if not principal:
        return set()
    rows = session.scalars(
        select(Entitlement).where(Entitlement.principal == principal, Entitlement.revoked_at.is_(None))
    ).all()
    now = datetime.now(UTC)
    return {(row.namespace, row.name) for row in rows if not _expired(row, now)}


def grant_row(
    principal: str, namespace: str, name: str, kind: str, by: str, expires: datetime | None, order: int | None = None
) -> Entitlement:
    check_name(principal, "principal")
    if name != "*":
        check_name(name, "name")
    return Entitlement(
        principal=principal, namespace=namespace, name=name, kind=kind, granted_by=by, expires_at=expires,
        order_id=order,
    )  # fmt: skip


def describe_order(row: Order) -> dict[str, Any]:
    return {
        "id": row.id,
        "principal": row.principal,
        "entry": f"{row.namespace}/{row.name}",
        "price": row.price,
        "terms": row.terms,
        "status": row.status,
        "processor": row.processor,
        "processor_ref": row.processor_ref,
        "created_at": iso(row.created_at),
        "decided_at": iso(row.decided_at),
        "decided_by": row.decided_by,
    }


def describe_entitlement(row: Entitlement) -> dict[str, Any]:
    return {
        "id": row.id,
        "principal": row.principal,
        "entry": f"{row.namespace}/{row.name}",
        "kind": row.kind,
        "order": row.order_id,
        "granted_by": row.granted_by,
        "created_at": iso(row.created_at),
        "expires_at": iso(row.expires_at),
        "revoked_at": iso(row.revoked_at),
    }
