"""HetaClient and AsyncHetaClient against a live `heta serve` (heta-demo, API keys), with a small
HTTP proxy in between that injects faults the client must survive: a connection dropped after the
server accepted the job (the retry must find the same job: one job, not two) and a 503 with
Retry-After (honoured)."""

import asyncio
import contextlib
import http.server
import threading
import time

import httpx
import pytest

from heta_service.client import (
    AsyncHetaClient,
    AuthError,
    HetaClient,
    JobFailedError,
    NotFoundError,
    RequestError,
)
from heta_service.connections import connect
from heta_service.schemas import JobResult

from ..helpers import job_count
from .conftest import serve

PROMPT = "c=6 e=6 b=3 h=3 m=6 ? h"
LONG = {"text": "a=2 d=5 g=2 k=9 n=5 p=9 c=4 e=4 ? g", "target_text": " 2", "config": {"samples": 1000}}
KEY = "k1"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    folder = tmp_path_factory.mktemp("client")
    with serve(None, folder, API_KEYS=f"{KEY},k2") as server:
        server.redis = connect(_embedded_url(folder / "redis"))
        yield server


def _embedded_url(data) -> str:
    conf = (data / "redis.conf").read_text().splitlines()
    return "unix://" + next(line.split()[1] for line in conf if line.startswith("unixsocket "))


class FaultProxy:
    """Forwards HTTP to the server; ``faults`` is a list of (method, path prefix, fault) used once
    each: "drop" forwards the request and closes the connection without the answer, an int answers
    that status with ``Retry-After: 1`` without forwarding, a (status, content type, body) tuple answers
    that instead (a proxy's own error page)."""

    def __init__(self, upstream: str):
        self.faults: list[tuple[str, str, object]] = []
        self.seen: list[tuple[str, str, int | None]] = []  # (method, path, status sent back or None)
        self.answers: list[dict] = []  # bodies the server sent for dropped requests
        proxy = self
        forward = httpx.Client(base_url=upstream, timeout=120)

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = next((f for f in proxy.faults if self.command == f[0] and self.path.startswith(f[1])), None)
                if fault is not None:
                    proxy.faults.remove(fault)
                if isinstance(fault and fault[2], tuple):
                    status, kind, page = fault[2]
                    self.send_response(status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    proxy.seen.append((self.command, self.path, status))
                    self.wfile.write(page)
                    return
                if isinstance(fault and fault[2], int):
                    self.send_response(fault[2])
                    self.send_header("Retry-After", "1")
                    self.send_header("Content-Type", "application/problem+json")
                    payload = b'{"status": 503, "code": "redis_unavailable", "detail": "injected"}'
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    # recorded before the answer goes out: the client may read `seen` the moment it has it
                    proxy.seen.append((self.command, self.path, fault[2]))
                    self.wfile.write(payload)
                    return
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")
                }
                answer = forward.request(self.command, self.path, content=body, headers=headers)
                if fault is not None:  # "drop": the server did the work; the caller never hears of it
                    proxy.answers.append(answer.json())
                    proxy.seen.append((self.command, self.path, None))
                    self.close_connection = True
                    return
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                proxy.seen.append((self.command, self.path, answer.status_code))
                self.wfile.write(answer.content)

            do_GET = do_POST = do_DELETE = _any

            def log_message(self, *_args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def proxy(live):
    running = FaultProxy(live.url)
    yield running
    running.close()


def test_attribute_returns_the_engines_result_model(live):
    with HetaClient(live.url, api_key=KEY) as heta:
        result = heta.attribute(PROMPT, target_text=" 3")
        assert isinstance(result, JobResult)
        assert result.topk(1)[0]["text"] == "h=3"
        stored = live.http.get(f"/jobs/{result.job_id}", headers={"Authorization": f"Bearer {KEY}"}).json()["result"]
        assert result.model_dump(mode="json") == JobResult.model_validate(stored).model_dump(mode="json")
        served = heta.models()
        assert served.default == "heta-demo" and "heta" in served.methods


def test_a_submit_whose_answer_is_lost_is_retried_into_the_same_job(live, proxy):
    before = job_count(live.redis)
    proxy.faults = [("POST", "/jobs", "drop")]
    with HetaClient(proxy.url, api_key=KEY, backoff=0.05) as heta:
        job_id = heta.submit(PROMPT, target_text=" 3", config={"samples": 3, "seed": 11})
        result = heta.wait(job_id, timeout=120)
    assert proxy.answers and proxy.answers[0]["job_id"] == job_id  # the dropped answer named this very job
    assert [s for s in proxy.seen if s[0] == "POST"] == [("POST", "/jobs", None), ("POST", "/jobs", 202)]
    assert job_count(live.redis) == before + 1  # one job, not two
    assert result.job_id == job_id and result.topk(1)[0]["text"] == "h=3"


def test_attribute_retries_after_a_lost_answer_and_a_503(live, proxy):
    before = job_count(live.redis)
    proxy.faults = [("POST", "/attribute", 503), ("POST", "/attribute", "drop")]
    with HetaClient(proxy.url, api_key=KEY, backoff=0.05) as heta:
        started = time.monotonic()
        result = heta.attribute(PROMPT, target_text=" 3", config={"samples": 4, "seed": 12})
        waited = time.monotonic() - started
    posts = [s for s in proxy.seen if s[0] == "POST"]
    assert posts[0] == ("POST", "/attribute", 503) and posts[1][2] is None and posts[2][2] == 200
    assert waited >= 1.0  # the injected Retry-After: 1 was honoured (the back-off alone is 0.05 s)
    assert job_count(live.redis) == before + 1
    assert result.job_id == proxy.answers[0]["job_id"]  # the retry found the job of the lost answer


def test_problems_raise_typed_errors_with_the_problem_code(live):
    with HetaClient(live.url, api_key=KEY, retries=0) as heta:
        with pytest.raises(RequestError) as bad:
            heta.attribute(PROMPT, target_position=99)
        assert bad.value.status == 422 and bad.value.code == "target_out_of_range"
        with pytest.raises(NotFoundError) as missing:
            heta.job("no-such-job")
        assert missing.value.code == "job_not_found"
    with HetaClient(live.url, api_key="wrong") as heta, pytest.raises(AuthError) as refused:
        heta.models()
    assert refused.value.status == 403 and refused.value.code == "invalid_api_key"
    with HetaClient(live.url, api_key="k2") as other, HetaClient(live.url, api_key=KEY) as mine:
        job_id = mine.submit(PROMPT, target_text=" 3")
        with pytest.raises(NotFoundError):
            other.job(job_id)  # another key's job does not exist for this key


def test_cancel_and_wait_say_how_the_job_ended(live):
    with HetaClient(live.url, api_key=KEY) as heta:
        job_id = heta.submit(**LONG)
        view = heta.cancel(job_id)
        assert view.job_id == job_id and view.status in ("cancelling", "cancelled")
        with pytest.raises(JobFailedError) as ended:
            heta.wait(job_id, timeout=120)
        assert ended.value.code == "cancelled"
        assert heta.job(job_id).status == "cancelled"
        assert heta.cancel(job_id, purge=True) is None
        with pytest.raises(NotFoundError):
            heta.job(job_id)


def test_the_async_client_runs_the_same_protocol(live, proxy):
    before = job_count(live.redis)
    proxy.faults = [("POST", "/jobs", "drop")]

    async def main():
        async with AsyncHetaClient(proxy.url, api_key=KEY, backoff=0.05) as heta:
            ids = await asyncio.gather(
                *(heta.submit(PROMPT, target_text=" 3", config={"seed": 20 + i}) for i in range(3))
            )
            results = await asyncio.gather(*(heta.wait(job_id, timeout=120) for job_id in ids))
            return ids, results, await heta.models()

    ids, results, served = asyncio.run(main())
    assert len(set(ids)) == 3 and job_count(live.redis) == before + 3
    assert [r.job_id for r in results] == ids and all(r.topk(1)[0]["text"] == "h=3" for r in results)
    assert served.default == "heta-demo"


def test_a_server_that_stays_unreachable_fails_after_the_retries():
    with contextlib.closing(HetaClient("http://127.0.0.1:9", retries=2, backoff=0.01)) as heta:
        with pytest.raises(httpx.ConnectError):
            heta.models()
