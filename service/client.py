"""Python clients of the service: :class:`HetaClient` and :class:`AsyncHetaClient`.

    from heta_service.client import HetaClient

    with HetaClient("http://127.0.0.1:8000", api_key=None) as heta:
        result = heta.attribute("c=6 e=6 b=3 h=3 m=6 ? h", target_text=" 3")
        result.topk(1)[0]["text"]                          # "h=3": the same result model the engine emits

Retries never run a job twice: every logical submit carries one ``Idempotency-Key`` (generated unless
given) through all of its retries, so a connection dropped after the server accepted the job comes
back with that same job. 429 and 503 are retried after the server's ``Retry-After`` (else with
exponential back-off and jitter); other problems raise at once as :class:`ProblemError` subclasses
carrying the problem's ``code``.

Both clients run one sans-I/O protocol (:class:`_Protocol`): its operations are generators that yield
("send", request) and ("sleep", seconds) steps, and each client drives them with its own transport,
so the retry and wait logic exists once.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Generator
from typing import Any

import httpx

from .schemas import BatchResult, JobResult, JobView, ModelsResponse
from .store import FINAL

RETRY_STATUSES = (429, 503)
Step = Generator[tuple[str, Any], Any, Any]


class ProblemError(Exception):
    """A problem+json answer (or a job that ended without a result): ``status``, ``code``, ``detail``."""

    def __init__(self, status: int, code: str, detail: str, problem: dict | None = None):
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail, self.problem = status, code, detail, problem or {}


class AuthError(ProblemError):
    """401 (no key) or 403 (a key the server does not know)."""


class NotFoundError(ProblemError):
    """404: no such job (or another key's), route or model."""


class ConflictError(ProblemError):
    """409: e.g. the job was cancelled, or is not finished yet."""


class RequestError(ProblemError):
    """413 / 422: the request itself is wrong; retrying cannot help."""


class RateLimitedError(ProblemError):
    """429 after the retries ran out (rate limit, full queue, too many unfinished jobs)."""


class UnavailableError(ProblemError):
    """503 after the retries ran out (Redis down, no worker, draining)."""


class JobFailedError(ProblemError):
    """The job ended failed, cancelled or dead-lettered; ``code`` is the job's error code."""


class DeadlineError(ProblemError):
    """504, or :meth:`HetaClient.wait` ran past its timeout."""


_BY_STATUS = {
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    409: ConflictError,
    413: RequestError,
    422: RequestError,
    429: RateLimitedError,
    503: UnavailableError,
    504: DeadlineError,
}


def problem_error(response: httpx.Response) -> ProblemError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    kind = _BY_STATUS.get(response.status_code, ProblemError)
    return kind(response.status_code, body.get("code", "http_error"), body.get("detail", response.text[:200]), body)


def request_body(text=None, **fields) -> dict:
    """The POST body: ``text`` / ``input_ids`` / ``messages``, target fields, ``config`` (a dict),
    ``model``, ``wait``, ``deadline_s``; None values are left out."""
    return {name: value for name, value in {"text": text, **fields}.items() if value is not None}


def batch_body(items: list, **fields) -> dict:
    """The POST /attribute/batch body: each item a text or a request-body dict."""
    return request_body(items=[{"text": item} if isinstance(item, str) else item for item in items], **fields)


class _Protocol:
    """Requests, retries and waiting, without I/O (see the module docstring)."""

    def __init__(self, base_url: str, api_key: str | None, retries: int, backoff: float, max_backoff: float):
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        after = response.headers.get("Retry-After") if response is not None else None
        if after is not None:
            try:
                return min(float(after), self.max_backoff)
            except ValueError:
                pass
        return min(self.backoff * 2**attempt, self.max_backoff) * (0.5 + random.random() / 2)

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: dict | None = None,
        params: dict | None = None,
        headers: dict | None = None,
        ok=(200,),
    ) -> Step:
        """One call with retries on transport errors, 429 and 503; the answer, or a ProblemError."""
        request = httpx.Request(
            method, self.base_url + path, json=json, params=params, headers={**self.headers, **(headers or {})}
        )
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = yield ("send", request)
            except httpx.TransportError:
                if last:
                    raise
                yield ("sleep", self._delay(attempt, None))
                continue
            if response.status_code in ok:
                return response
            if response.status_code not in RETRY_STATUSES or last:
                raise problem_error(response)
            yield ("sleep", self._delay(attempt, response))
        raise AssertionError("unreachable")

    def submit(self, body: dict, idempotency_key: str | None) -> Step:
        key = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}  # one key for every retry of this submit
        response = yield from self._request("POST", "/jobs", json=body, headers=key, ok=(202,))
        return response.json()["job_id"]

    def attribute(
        self, body: dict, idempotency_key: str | None, timeout: float | None, path: str = "/attribute"
    ) -> Step:
        """POST ``path`` (/attribute or /attribute/batch), then wait for the job if it outlives ``wait``."""
        key = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        response = yield from self._request("POST", path, json=body, headers=key, ok=(200, 202))
        if response.status_code == 200:
            return (BatchResult if path.endswith("/batch") else JobResult).model_validate_json(response.content)
        return (yield from self.wait(response.json()["job_id"], timeout))

    def job(self, job_id: str) -> Step:
        response = yield from self._request("GET", f"/jobs/{job_id}")
        return JobView.model_validate_json(response.content)

    def wait(self, job_id: str, timeout: float | None) -> Step:
        """Poll until the job ends (every 50 ms at first, then up to 1 s): its result, or JobFailedError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.05
        while True:
            view = yield from self.job(job_id)
            if view.status == "done":
                return view.result
            if view.status in FINAL:
                error = view.error
                code, detail = (error.code, error.detail) if error else (view.status, f"the job is {view.status}")
                raise JobFailedError(409 if view.status == "cancelled" else 422, code, detail, {"job_id": job_id})
            if deadline is not None and time.monotonic() + pause > deadline:
                raise DeadlineError(
                    504, "wait_timeout", f"job {job_id} is still {view.status} after {timeout} s", {"job_id": job_id}
                )
            yield ("sleep", pause)
            pause = min(2 * pause, 1.0)

    def cancel(self, job_id: str, purge: bool) -> Step:
        response = yield from self._request(
            "DELETE", f"/jobs/{job_id}", params={"purge": "true"} if purge else None, ok=(202, 204)
        )
        return None if response.status_code == 204 else JobView.model_validate_json(response.content)

    def models(self) -> Step:
        response = yield from self._request("GET", "/models")
        return ModelsResponse.model_validate_json(response.content)


class _Client:
    """What both clients share: the protocol and the public methods' signatures."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 60.0,
    ):
        self._protocol = _Protocol(base_url, api_key, retries, backoff, max_backoff)
        self._timeout = timeout

    def _ops(self, name: str, *args):
        return getattr(self._protocol, name)(*args)


class HetaClient(_Client):
    """Blocking client (``httpx.Client``); a context manager. Every method retries as the module says."""

    def __init__(self, base_url: str, api_key: str | None = None, **options):
        super().__init__(base_url, api_key, **options)
        self._http = httpx.Client(timeout=self._timeout)

    def _drive(self, steps: Step):
        step = next(steps)
        while True:
            kind, value = step
            try:
                if kind == "sleep":
                    time.sleep(value)
                    step = steps.send(None)
                    continue
                try:
                    response = self._http.send(value)
                except httpx.TransportError as error:
                    step = steps.throw(error)
                    continue
                step = steps.send(response)
            except StopIteration as stop:
                return stop.value

    def attribute(
        self, text=None, *, idempotency_key: str | None = None, timeout: float | None = None, **fields
    ) -> JobResult:
        """POST /attribute, then wait for the job if it outlives the request's ``wait``."""
        return self._drive(self._ops("attribute", request_body(text, **fields), idempotency_key, timeout))

    def batch(
        self, items: list, *, idempotency_key: str | None = None, timeout: float | None = None, **fields
    ) -> BatchResult:
        """POST /attribute/batch: ``items`` are texts or request-body dicts; ``fields``: ``config``
        (every item's), ``model``, ``wait``, ``deadline_s``. One entry per item, result or error."""
        return self._drive(
            self._ops("attribute", batch_body(items, **fields), idempotency_key, timeout, "/attribute/batch")
        )

    def submit(self, text=None, *, idempotency_key: str | None = None, **fields) -> str:
        """POST /jobs: the job id."""
        return self._drive(self._ops("submit", request_body(text, **fields), idempotency_key))

    def job(self, job_id: str) -> JobView:
        return self._drive(self._ops("job", job_id))

    def wait(self, job_id: str, timeout: float | None = None) -> JobResult:
        return self._drive(self._ops("wait", job_id, timeout))

    def cancel(self, job_id: str, purge: bool = False) -> JobView | None:
        return self._drive(self._ops("cancel", job_id, purge))

    def models(self) -> ModelsResponse:
        return self._drive(self._ops("models"))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HetaClient:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


class AsyncHetaClient(_Client):
    """The same methods as :class:`HetaClient`, awaitable (``httpx.AsyncClient``); an async context manager."""

    def __init__(self, base_url: str, api_key: str | None = None, **options):
        super().__init__(base_url, api_key, **options)
        self._http = httpx.AsyncClient(timeout=self._timeout)

    async def _drive(self, steps: Step):
        step = next(steps)
        while True:
            kind, value = step
            try:
                if kind == "sleep":
                    await asyncio.sleep(value)
                    step = steps.send(None)
                    continue
                try:
                    response = await self._http.send(value)
                except httpx.TransportError as error:
                    step = steps.throw(error)
                    continue
                step = steps.send(response)
            except StopIteration as stop:
                return stop.value

    async def attribute(
        self, text=None, *, idempotency_key: str | None = None, timeout: float | None = None, **fields
    ) -> JobResult:
        return await self._drive(self._ops("attribute", request_body(text, **fields), idempotency_key, timeout))

    async def batch(
        self, items: list, *, idempotency_key: str | None = None, timeout: float | None = None, **fields
    ) -> BatchResult:
        return await self._drive(
            self._ops("attribute", batch_body(items, **fields), idempotency_key, timeout, "/attribute/batch")
        )

    async def submit(self, text=None, *, idempotency_key: str | None = None, **fields) -> str:
        return await self._drive(self._ops("submit", request_body(text, **fields), idempotency_key))

    async def job(self, job_id: str) -> JobView:
        return await self._drive(self._ops("job", job_id))

    async def wait(self, job_id: str, timeout: float | None = None) -> JobResult:
        return await self._drive(self._ops("wait", job_id, timeout))

    async def cancel(self, job_id: str, purge: bool = False) -> JobView | None:
        return await self._drive(self._ops("cancel", job_id, purge))

    async def models(self) -> ModelsResponse:
        return await self._drive(self._ops("models"))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncHetaClient:
        return self

    async def __aexit__(self, *_exc) -> None:
        await self.aclose()
