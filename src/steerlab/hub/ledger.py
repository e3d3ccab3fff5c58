"""The store's books: entitlements granted, orders placed and settled, and every pull with the right it used.

LocalStore delegates here (its grant / purchase / approve / reject / settle_order / orders / entitlements / pulls);
the rules about who may see and pull what are in hub/market.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from steerlab.errors import SteerlabError
from steerlab.hub.access import Access, iso
from steerlab.hub.catalog import Entitlement, Order, Pull
from steerlab.hub.entry import EntryInfo
from steerlab.hub.errors import Conflict, Forbidden, NotFound, Unauthorized
from steerlab.hub.market import (
    OwnerApproval,
    PaymentProcessor,
    active,
    describe_entitlement,
    describe_order,
    grant_row,
)


def _admin(access: Access, namespace: str, what: str) -> None:
    if access.can_admin(namespace):
        return
    if access.principal is None and access.namespace is None:
        raise Unauthorized(f"{what} in namespace {namespace!r} needs an admin token for it (--token).")
    raise Forbidden(f"{what} in namespace {namespace!r} needs an admin token for it; this token is not one.")


class Ledger:
    def __init__(self, sessions: Any, payments: PaymentProcessor | None = None) -> None:
        self.sessions = sessions
        self.payments: PaymentProcessor = payments or OwnerApproval()

    # ----- entitlements -----
    def grant(
        self, namespace: str, name: str, principal: str, access: Access, expires: datetime | None = None
    ) -> dict[str, Any]:
        _admin(access, namespace, "granting access")
        with self.sessions.begin() as session:
            row = grant_row(principal, namespace, name, "grant", access.who, expires)
            session.add(row)
            session.flush()
            return describe_entitlement(row)

    def revoke_grants(self, namespace: str, name: str, principal: str, access: Access) -> int:
        _admin(access, namespace, "revoking access")
        with self.sessions.begin() as session:
            rows = session.scalars(
                select(Entitlement).where(
                    Entitlement.principal == principal,
                    Entitlement.namespace == namespace,
                    Entitlement.name == name,
                    Entitlement.revoked_at.is_(None),
                )
            ).all()
            for row in rows:
                row.revoked_at = datetime.now(UTC)
            return len(rows)

    def entitlements(self, namespace: str, access: Access) -> list[dict[str, Any]]:
        _admin(access, namespace, "listing entitlements")
        with self.sessions() as session:
            rows = session.scalars(select(Entitlement).where(Entitlement.namespace == namespace)).all()
            return [describe_entitlement(r) for r in sorted(rows, key=lambda r: r.id)]

    # ----- orders -----
    def purchase(self, info: EntryInfo, access: Access) -> dict[str, Any]:
        """An order for a licensed entry at its listed price and terms, handed to the payment processor."""
        if not access.principal:
            raise Unauthorized("purchasing needs a token that names you (`steerlab hub token --principal NAME`).")
        if info.visibility != "licensed":
            raise SteerlabError(f"{info.namespace}/{info.name} is {info.visibility}, not licensed: nothing to buy.")
        with self.sessions.begin() as session:
            if active(session, access.principal, info.namespace, info.name) is not None:
                raise Conflict(f"{access.principal} already holds an entitlement to {info.namespace}/{info.name}.")
            order = Order(
                principal=access.principal, namespace=info.namespace, name=info.name, price=info.price,
                terms=info.terms, status="pending", processor=self.payments.name,
            )  # fmt: skip
            session.add(order)
            session.flush()
            status, reference = self.payments.start(order)
            order.processor_ref = reference
            if status == "approved":
                self._settle(session, order, self.payments.name)
            return describe_order(order)

    def decide(self, order_id: int, approve: bool, access: Access) -> dict[str, Any]:
        """The owner's approval (the default processor's settlement) or refusal of a pending order."""
        with self.sessions.begin() as session:
            order = self._pending(session, order_id)
            _admin(access, order.namespace, "deciding an order")
            if approve:
                self._settle(session, order, access.who)
            else:
                order.status, order.decided_at, order.decided_by = "rejected", datetime.now(UTC), access.who
            return describe_order(order)

    def settle(self, order_id: int, processor: str) -> dict[str, Any]:
        """What a payment processor's confirmation calls: the order is paid, the buyer entitled."""
        with self.sessions.begin() as session:
            order = self._pending(session, order_id)
            if order.processor != processor:
                raise Forbidden(f"order {order_id} is handled by {order.processor!r}, not {processor!r}.")
            self._settle(session, order, processor)
            return describe_order(order)

    @staticmethod
    def _pending(session: Any, order_id: int) -> Order:
        order = session.get(Order, order_id)
        if order is None:
            raise NotFound(f"no order {order_id}: `steerlab hub orders` lists them.")
        if order.status != "pending":
            raise Conflict(f"order {order_id} is already {order.status}.")
        return order

    @staticmethod
    def _settle(session: Any, order: Order, by: str) -> None:
        order.status, order.decided_at, order.decided_by = "approved", datetime.now(UTC), by
        session.add(grant_row(order.principal, order.namespace, order.name, "purchase", by, None, order.id))

    def orders(self, access: Access, namespace: str | None = None) -> list[dict[str, Any]]:
        """A namespace's orders for its admin; without a namespace, the orders the token's holder placed."""
        with self.sessions() as session:
            if namespace is not None:
                _admin(access, namespace, "listing orders")
                query = select(Order).where(Order.namespace == namespace)
            elif access.write_all:
                query = select(Order)
            elif access.principal:
                query = select(Order).where(Order.principal == access.principal)
            else:
                raise Unauthorized("listing orders needs a token (yours, or a namespace admin's with --namespace).")
            return [describe_order(o) for o in sorted(session.scalars(query).all(), key=lambda o: o.id)]

    # ----- the pull log -----
    def record_pull(self, info: EntryInfo, access: Access, basis: str, entitlement: int | None) -> None:
        with self.sessions.begin() as session:
            row = Pull(principal=access.who, token_id=access.token_id or "", namespace=info.namespace)
            row.name, row.version, row.sha256 = info.name, info.version, info.sha256
            row.basis, row.entitlement_id = basis, entitlement
            session.add(row)

    def pulls(self, namespace: str, access: Access) -> list[dict[str, Any]]:
        _admin(access, namespace, "reading the pull log")
        with self.sessions() as session:
            rows = session.scalars(select(Pull).where(Pull.namespace == namespace).order_by(Pull.id)).all()
            return [_pull_record(r) for r in rows]


def _pull_record(row: Pull) -> dict[str, Any]:
    return {
        "at": iso(row.at),
        "principal": row.principal,
        "token": row.token_id,
        "entry": f"{row.namespace}/{row.name}@{row.version}",
        "sha256": row.sha256,
        "basis": row.basis,
        "entitlement": row.entitlement_id,
    }
