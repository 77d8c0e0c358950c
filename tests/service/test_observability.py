"""Distributed traces (issue 24, item 1): a live `heta serve` exporting OpenTelemetry spans over
OTLP/HTTP to a receiver this test runs, which decodes the real protobuf payload
(``ExportTraceServiceRequest``). One trace per request: the caller's span → the API's request span
(admission, estimate, enqueue) → across the process boundary the worker's queue wait and job span →
a span per engine stage laid end to end, adding up to the result's ``compute_s``, and finalize."""

import gzip
import http.server
import threading
import time
import uuid

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from .conftest import SLOW_TEXT, serve

CANARY = f"canary{uuid.uuid4().hex}"
KEY = f"key-{CANARY}"
AUTH = {"Authorization": f"Bearer {KEY}"}
CALLER_TRACE, CALLER_SPAN = uuid.uuid4().hex, uuid.uuid4().hex[:16]


class Receiver(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver: POST /v1/traces with a protobuf ExportTraceServiceRequest."""

    def __init__(self):
        self.spans: list[dict] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def wait_for(self, found, timeout: float = 30.0):
        """Polls ``found(spans)`` until it answers something truthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                answer = found(list(self.spans))
            if answer:
                return answer
            time.sleep(0.1)
        raise TimeoutError(f"spans not received; got {sorted({s['name'] for s in self.spans})}")


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        decoded = [
            {
                "name": span.name,
                "trace_id": span.trace_id.hex(),
                "span_id": span.span_id.hex(),
                "parent": span.parent_span_id.hex() or None,
                "start": span.start_time_unix_nano,
                "end": span.end_time_unix_nano,
                "attributes": {a.key: _value(a.value) for a in span.attributes},
                "role": {a.key: _value(a.value) for a in resource.resource.attributes}.get("heta.role"),
                "service": {a.key: _value(a.value) for a in resource.resource.attributes}.get("service.name"),
            }
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        with self.server.lock:
            self.server.spans.extend(decoded)
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def _value(value):
    return getattr(value, value.WhichOneof("value"))


@pytest.fixture(scope="module")
def traced(model_dir, tmp_path_factory):
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_SERVICE_NAME": "heta-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in otel.items():
            patch.setenv(name, value)
        # one job per read: each job's stage times are its own, not a shared batch's
        with serve(model_dir, tmp_path_factory.mktemp("traces"), WORKERS=1, API_KEYS=KEY, BATCH_JOBS=1) as server:
            yield server, receiver
    receiver.shutdown()


def _tree(spans: list[dict], trace_id: str) -> dict[str, list[dict]]:
    """The trace's spans by name."""
    named: dict[str, list[dict]] = {}
    for span in spans:
        if span["trace_id"] == trace_id:
            named.setdefault(span["name"], []).append(span)
    return named


def _only(named: dict, name: str) -> dict:
    assert len(named.get(name, [])) == 1, f"{name}: {named.get(name)}"
    return named[name][0]


def _job_trace(receiver: Receiver, trace_id: str, stages: tuple[str, ...]) -> dict[str, list[dict]]:
    def complete(spans):
        named = _tree(spans, trace_id)
        return named if {"POST /attribute", "job", "finalize", *stages} <= set(named) else None

    return receiver.wait_for(complete)


def _under(named: dict, span: dict, ancestor: dict) -> bool:
    """``span`` descends from ``ancestor`` (FastAPI's endpoint and dependency spans may lie between)."""
    by_id = {s["span_id"]: s for spans in named.values() for s in spans}
    while span["parent"] in by_id:
        span = by_id[span["parent"]]
        if span is ancestor:
            return True
    return False


def _seconds(span: dict) -> float:
    return (span["end"] - span["start"]) / 1e9


def test_one_trace_runs_from_the_callers_span_through_the_worker_to_each_engine_stage(traced):
    server, receiver = traced
    # a job of a few seconds: the stages' sum is measured against a compute time well above its overheads
    body = {"text": f"{SLOW_TEXT} {CANARY}", "config": {"samples": 4}, "wait": 120}
    answer = server.http.post(
        "/attribute", json=body, headers={**AUTH, "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
    )
    assert answer.status_code == 200, answer.text
    result = answer.json()
    named = _job_trace(receiver, CALLER_TRACE, ("flow", "kl", "hessian"))
    request = _only(named, "POST /attribute")
    assert request["parent"] == CALLER_SPAN and request["role"] == "api" and request["service"] == "heta-test"
    assert (
        request["attributes"]["http.response.status_code"] == 200
        and request["attributes"]["heta.request_id"] == answer.headers["X-Request-ID"]
    )
    admission, enqueue = _only(named, "admission"), _only(named, "enqueue")
    assert (
        _under(named, admission, request)
        and _under(named, enqueue, request)
        and admission["parent"] == enqueue["parent"]
    )
    assert _only(named, "estimate")["parent"] == admission["span_id"]
    assert enqueue["attributes"]["heta.job_id"] == result["job_id"]
    # across the process boundary: the worker's spans are children of the API's enqueue span
    wait, job = _only(named, "queue wait"), _only(named, "job")
    assert wait["parent"] == job["parent"] == enqueue["span_id"] and job["role"] == wait["role"] == "worker"
    assert job["attributes"]["heta.job_id"] == result["job_id"] and job["attributes"]["heta.outcome"] == "done"
    assert job["attributes"]["heta.method"] == "heta" and job["attributes"]["heta.hvps"] == result["meta"]["hvps"] > 0
    assert job["attributes"]["heta.tokens"] == len(result["tokens"]) + len(result["targets"])
    assert job["attributes"]["heta.model"] == result["meta"]["model"]
    # the engine's stages, end to end, adding up to the result's compute_s
    stages = [_only(named, name) for name in ("flow", "kl", "hessian")]
    assert (
        all(stage["parent"] == job["span_id"] for stage in stages)
        and _only(named, "finalize")["parent"] == job["span_id"]
    )
    assert [s["end"] for s in stages[:-1]] == [s["start"] for s in stages[1:]]
    compute_s = result["meta"]["timings"]["compute_s"]
    assert job["attributes"]["heta.compute_s"] == pytest.approx(compute_s, rel=1e-9)
    total = sum(_seconds(stage) for stage in stages)
    print(
        f"stages {total:.4f} s vs compute_s {compute_s:.4f} s: {100 * abs(total - compute_s) / compute_s:.2f} % apart"
    )
    assert compute_s > 1.0 and total == pytest.approx(compute_s, rel=0.05)
    assert wait["end"] <= job["start"] + 1_000_000 and stages[0]["start"] >= job["start"]
    # no prompt text and no key in any span
    assert not [span for span in receiver.spans if CANARY in str(span)]


def test_a_baseline_with_diagnostics_has_those_stages(traced):
    server, receiver = traced
    trace_id = uuid.uuid4().hex
    body = {"text": SLOW_TEXT, "config": {"method": "gradient", "diagnostics": True}, "wait": 120}
    answer = server.http.post(
        "/attribute", json=body, headers={**AUTH, "traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"}
    )
    assert answer.status_code == 200, answer.text
    named = _job_trace(receiver, trace_id, ("baseline", "diagnostics"))
    job = _only(named, "job")
    baseline, diagnostics = _only(named, "baseline"), _only(named, "diagnostics")
    assert baseline["parent"] == diagnostics["parent"] == job["span_id"] and baseline["end"] == diagnostics["start"]
    assert "flow" not in named and job["attributes"]["heta.method"] == "gradient"
    timings = answer.json()["meta"]["timings"]
    assert _seconds(baseline) == pytest.approx(timings["baseline_s"], abs=1e-6)
    assert _seconds(diagnostics) == pytest.approx(timings["diagnostics_s"], abs=1e-6)


@pytest.mark.parametrize(
    "traceparent", ["00-zzzz-1234-01", f"00-{'0' * 32}-{'0' * 16}-01", "not a traceparent", "00-" + "a" * 200]
)
def test_an_invalid_traceparent_starts_a_new_trace_never_an_error(traced, traceparent):
    server, receiver = traced
    request_id = f"bad-tp-{uuid.uuid4().hex[:8]}"
    answer = server.http.get("/models", headers={**AUTH, "traceparent": traceparent, "X-Request-ID": request_id})
    assert answer.status_code == 200

    def mine(spans):
        return [s for s in spans if s["attributes"].get("heta.request_id") == request_id]

    (span,) = receiver.wait_for(mine)
    assert span["name"] == "GET /models" and span["parent"] is None and span["trace_id"] != "0" * 32
    assert len(span["trace_id"]) == 32 and span["trace_id"] not in traceparent
