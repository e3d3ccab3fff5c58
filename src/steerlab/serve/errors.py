"""API errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}} with a 4xx status."""

from __future__ import annotations

from typing import Any

from steerlab.errors import SteerlabError


class ApiError(SteerlabError):
    """A request the server refuses; `status` is the HTTP status, `code` a stable machine-readable name."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request", param: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        kind = "not_found_error" if self.status == 404 else "invalid_request_error"
        return error_body(self.message, kind, self.code, self.param)


def error_body(message: str, kind: str, code: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
