"""API errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}} with a 4xx status."""

from __future__ import annotations

from typing import Any

from steerlab.errors import SteerlabError


class ApiError(SteerlabError):
    """A request the server refuses; `status` is the HTTP status, `code` a stable machine-readable name."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        code: str = "invalid_request",
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, KINDS.get(self.status, "invalid_request_error"), self.code, self.param)


# OpenAI's error types by status.
KINDS = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}


def error_body(message: str, kind: str, code: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
