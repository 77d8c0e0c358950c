"""RFC 9457 problem details: every error response is ``application/problem+json`` with a stable ``code``.

One schema (:class:`ProblemDetails`) for every error status; routes declare the statuses they can
send with :func:`problem_responses`, and :func:`openapi_with_problems` puts that schema into the
published OpenAPI document in place of FastAPI's never-sent ``HTTPValidationError``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from heta_core import Estimate

from . import logs

PROBLEM_JSON = "application/problem+json"
URN_SAFE = (
    "-._~:@!$&'()*+,;="  # a request id's characters that stay as they are in the URN (RFC 8141); the rest %-encoded
)

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
    504: "Gateway timeout",
}

# what each status means here; its codes are listed in docs/api.md ("Errors")
DESCRIPTIONS = {
    400: "the body is not parseable JSON or not UTF-8 (`malformed_body`)",
    401: "no API key (`missing_api_key`)",
    403: "the API key is not valid (`invalid_api_key`)",
    404: "no such job, or not yours (`job_not_found`); unknown route (`not_found`)",
    409: "the job is already finished (`job_finished`) or was cancelled (`cancelled`)",
    413: "the body exceeds HETA_MAX_BODY_BYTES (`body_too_large`)",
    422: "the request cannot be run: `validation_error`, `unknown_model`, `invalid_spans`, `cost_over_ceiling`, "
    "`invalid_batch`, ... (refused before anything is queued)",
    429: "`queue_full`, `too_many_inflight` or `rate_limited`; retry after `Retry-After` seconds",
    500: "the job failed inside the service (`internal_error`, `dead_lettered`)",
    503: "`redis_unavailable`, `draining` or `out_of_memory`; retry after `Retry-After` seconds",
    504: "the job missed its deadline (`deadline_exceeded`)",
}


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where in the request: body, field names, list indices")
    msg: str
    type: str


class ItemProblem(BaseModel):
    index: int = Field(ge=0, description="position in the batch's `items`")
    code: str
    detail: str
    field: str | None = None


class ProblemDetails(BaseModel):
    """An error (RFC 9457). Branch on ``code``, never on ``detail``'s wording."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "https://heta.dev/problems/invalid_spans",
                    "title": "Unprocessable content",
                    "status": 422,
                    "code": "invalid_spans",
                    "detail": "span [5, 2] is outside the text (0..23) or empty",
                    "instance": "urn:heta:request:6f1c2a9e4b7d4e0f8a3c5b2d1e0f9a8b",
                }
            ]
        }
    )
    type: str = Field(description="a URI naming the problem type (https://heta.dev/problems/<code>)")
    title: str = Field(description="the HTTP status' title")
    status: int = Field(ge=400, le=599)
    code: str = Field(description="stable machine-readable code")
    detail: str = Field(description="what went wrong, for people")
    instance: str | None = Field(
        None, description="the request: `urn:heta:request:<id>` with the response's `X-Request-ID` (percent-encoded)"
    )
    field: str | None = Field(None, description="invalid_config: the offending config field")
    errors: list[FieldError] | None = Field(None, description="validation_error: every invalid field")
    items: list[ItemProblem] | None = Field(None, description="invalid_batch: every refused item of a batch")
    estimate: Estimate | None = Field(None, description="cost_over_ceiling: the request's predicted cost")
    job_id: str | None = Field(None, description="the job the problem concerns")


class Problem(Exception):
    """Raise anywhere in a request; the handler renders it."""

    def __init__(self, status: int, code: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers, self.extra = status, code, detail, headers or {}, extra


def instance() -> str | None:
    """The current request as a URN (``urn:heta:request:<X-Request-ID>``), or None outside a request."""
    request_id = logs.current("request_id")
    return f"urn:heta:request:{quote(request_id, safe=URN_SAFE)}" if request_id else None


def problem_response(problem: Problem) -> JSONResponse:
    body = {
        "type": f"https://heta.dev/problems/{problem.code}",
        "title": TITLES.get(problem.status, "Error"),
        "status": problem.status,
        "code": problem.code,
        "detail": problem.detail,
        **{k: v for k, v in problem.extra.items() if v is not None},
    }
    urn = instance()
    if urn:
        body["instance"] = urn
    return JSONResponse(body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_JSON)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses, all with the one problem schema."""
    schema = {"$ref": "#/components/schemas/ProblemDetails"}
    return {
        status: {"description": DESCRIPTIONS[status], "content": {PROBLEM_JSON: {"schema": schema}}}
        for status in statuses
    }


def openapi_with_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Adds :class:`ProblemDetails` (and what it references) to the components and drops FastAPI's
    default 422 ``HTTPValidationError`` entries, which this service never sends."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem = ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(problem.pop("$defs", {}))
    components["ProblemDetails"] = problem
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            responses = operation.get("responses", {})
            if "HTTPValidationError" in str(responses.get("422", {})):
                del responses["422"]
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema
