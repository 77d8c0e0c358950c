"""RFC 9457 problem details: every error response is ``application/problem+json`` with a stable ``code``."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    413: "Payload too large",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
    504: "Gateway timeout",
}


class Problem(Exception):
    """Raise anywhere in a request; the handler renders it."""

    def __init__(self, status: int, code: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers, self.extra = status, code, detail, headers or {}, extra


def problem_response(problem: Problem, instance: str | None = None) -> JSONResponse:
    body = {
        "type": f"https://heta.dev/problems/{problem.code}",
        "title": TITLES.get(problem.status, "Error"),
        "status": problem.status,
        "code": problem.code,
        "detail": problem.detail,
        **problem.extra,
    }
    if instance:
        body["instance"] = instance
    return JSONResponse(body, status_code=problem.status, headers=problem.headers, media_type="application/problem+json")
