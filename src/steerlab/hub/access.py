"""Who is asking, and what they may do: scoped, expiring, revocable bearer tokens, stored as hashes.

A token names its holder (the principal: who the pull log and the orders name) and at most one namespace with a
scope: read (private entries and licensed content of that namespace), write (publish and withdraw, and read), admin
(grants, orders, the pull log, and write). A token with no namespace only says who its holder is (a buyer's token).
The store's owner (local file access) may do everything.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from steerlab.errors import SteerlabError
from steerlab.hub.catalog import Token, new_token_id
from steerlab.hub.errors import Forbidden, Unauthorized
from steerlab.hub.refs import check_name

LEVELS = {"read": 1, "write": 2, "admin": 3}
DURATION_RE = re.compile(r"^(\d{1,6})([hdw])$")
UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


@dataclass(frozen=True)
class Access:
    """Local file access reads and writes everything; a server client holds a token for (at most) one namespace."""

    read_all: bool = False
    write_all: bool = False
    namespace: str | None = None
    scope: str = "write"
    principal: str | None = None
    token_id: str | None = None

    def level(self, namespace: str) -> int:
        if self.write_all:
            return LEVELS["admin"]
        return LEVELS.get(self.scope, 0) if self.namespace == namespace else 0

    def can_read(self, namespace: str) -> bool:
        return self.read_all or self.level(namespace) >= LEVELS["read"]

    def can_write(self, namespace: str) -> bool:
        return self.level(namespace) >= LEVELS["write"]

    def can_admin(self, namespace: str) -> bool:
        return self.level(namespace) >= LEVELS["admin"]

    @property
    def who(self) -> str:
        if self.write_all:
            return "owner"
        return self.principal or self.namespace or "anonymous"


OWNER = Access(read_all=True, write_all=True)
ANONYMOUS = Access(scope="")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def expiry(duration: str | None) -> datetime | None:
    """'12h', '30d', '2w' from now; None never expires."""
    if not duration:
        return None
    match = DURATION_RE.fullmatch(duration.strip())
    if not match:
        raise SteerlabError(f"invalid expiry {duration!r}: write a number of hours, days or weeks, e.g. 12h, 30d, 2w.")
    return datetime.now(UTC) + int(match.group(1)) * UNITS[match.group(2)]


def aware(moment: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without their zone; they were written in UTC."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def new_token(
    namespace: str | None, scope: str | None, principal: str | None, expires: datetime | None
) -> tuple[str, Token]:
    """The secret (shown once) and its catalogue row (which keeps its hash)."""
    if namespace is not None:
        check_name(namespace, "namespace")
    scope = scope or ("write" if namespace else "")
    if namespace is not None and scope not in LEVELS:
        raise SteerlabError(f"invalid scope {scope!r}: use one of {', '.join(LEVELS)}.")
    if namespace is None and scope:
        raise SteerlabError("a scope needs a namespace: steerlab hub token NAMESPACE --scope SCOPE.")
    who = check_name(principal, "principal") if principal else namespace
    if who is None:
        raise SteerlabError("say whom the token is for: a NAMESPACE, or --principal NAME for an identity token.")
    secret = "stl_" + secrets.token_urlsafe(32)
    row = Token(
        namespace=namespace, token_hash=hash_token(secret), public_id=new_token_id(),
        principal=who, scope=scope, expires_at=expires,
    )  # fmt: skip
    return secret, row


def lookup(session: Any, token: str) -> Access:
    """The access a bearer token grants; an unknown, revoked or expired token is refused outright."""
    row = session.scalars(select(Token).where(Token.token_hash == hash_token(token))).first()
    if row is None:
        raise Forbidden("the token is not valid for this store: ask its owner for one (`steerlab hub token NS`).")
    if row.revoked_at is not None:
        raise Forbidden(f"token {row.public_id} was revoked on {aware(row.revoked_at):%Y-%m-%d}: ask for a new one.")
    expires = aware(row.expires_at)
    if expires is not None and expires <= datetime.now(UTC):
        raise Unauthorized(f"token {row.public_id} expired on {expires:%Y-%m-%d %H:%M} UTC: ask for a new one.")
    scope = row.scope if row.namespace else ""
    return Access(namespace=row.namespace, scope=scope, principal=row.principal, token_id=row.public_id)


def describe(row: Token) -> dict[str, Any]:
    """A token as its owner lists it: never its secret, nor its hash."""
    return {
        "id": row.public_id,
        "principal": row.principal,
        "namespace": row.namespace,
        "scope": row.scope if row.namespace else "identity",
        "created_at": iso(row.created_at),
        "expires_at": iso(row.expires_at),
        "revoked_at": iso(row.revoked_at),
    }


def iso(moment: datetime | None) -> str:
    found = aware(moment)
    return found.isoformat(timespec="seconds") if found else ""
