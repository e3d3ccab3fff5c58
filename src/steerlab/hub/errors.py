"""Store refusals, each carrying the HTTP status the server answers with."""

from __future__ import annotations

from steerlab.errors import SteerlabError


class HubError(SteerlabError):
    status = 400


class Unauthorized(HubError):
    status = 401


class PaymentRequired(HubError):
    """A licensed entry without an entitlement to it."""

    status = 402


class Forbidden(HubError):
    status = 403


class Untrusted(Forbidden):
    """Content whose signer this machine's trust does not accept (unsigned where signing is required, revoked,
    another key than the namespace's pin)."""


class NotFound(HubError):
    status = 404


class Conflict(HubError):
    status = 409


class TooLarge(HubError):
    status = 413


class UnsupportedMediaType(HubError):
    status = 415


def status_of(exc: Exception) -> int:
    """Any other SteerlabError is a bad request: the upload or the query was wrong."""
    return exc.status if isinstance(exc, HubError) else 400
