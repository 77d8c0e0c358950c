"""Distributed traces with OpenTelemetry, off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the SDK's
other ``OTEL_*`` variables apply: headers, sampler, batch delay).

One trace per request, across processes: the API's request span (FastAPI's own server span, with
its endpoint and dependency spans) continues the caller's W3C ``traceparent`` (an invalid one starts
a new trace: the propagator ignores it) and holds the admission, estimate and enqueue spans; the
enqueue span's context travels inside the job (its ``traceparent`` field), so the worker's spans —
the queue wait, the job, one span per engine stage laid end to end from the engine's measured stage
times, and finalize — are its children in the worker process. Attributes name the model, method,
tokens, HVPs, job and outcome; never a prompt or a key. Disabled, every helper here is a no-op that
costs no span.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from opentelemetry import propagate, trace

STAGES = ("flow", "kl", "hessian", "baseline", "diagnostics")  # the engine's order (heta_core Timings)

_enabled = False
tracer = trace.get_tracer("heta")


def setup(endpoint: str | None, service_name: str, role: str) -> None:
    """Exports this process' spans over OTLP/HTTP when ``endpoint`` is set (``role``: api, worker)."""
    global _enabled
    if not endpoint or _enabled:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # shutdown_on_exit (the default): the spans still buffered are sent when the process exits
    provider = TracerProvider(resource=Resource.create({"service.name": service_name, "heta.role": role}))
    # the exporter reads OTEL_EXPORTER_OTLP_ENDPOINT itself (adding /v1/traces) and its headers, timeout, ...
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _enabled = True


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[trace.Span | None]:
    """A child of the current span, current inside (None when tracing is off)."""
    if not _enabled:
        yield None
        return
    with tracer.start_as_current_span(name, attributes=_attributes(attributes)) as current:
        yield current


def annotate(**attributes: Any) -> None:
    """Attributes on the current span (a no-op without one)."""
    if _enabled:
        trace.get_current_span().set_attributes(_attributes(attributes))


def traceparent() -> str:
    """The current span's W3C ``traceparent`` ("" when tracing is off): what a job carries to its worker."""
    if not _enabled:
        return ""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")


def _attributes(values: dict[str, Any]) -> dict[str, Any]:
    return {f"heta.{name}": value for name, value in values.items() if value is not None}


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class JobSpan:
    """The worker's span of one job; ``stages`` lays the engine's stages under it, ``step`` times a real step."""

    def __init__(self, current: trace.Span | None):
        self.current = current

    def stages(self, timings, **attributes: Any) -> None:
        """One child span per stage that ran, end to end from the engine call's start (now less
        ``compute_s``) with the durations the engine measured, so that they add up to its compute."""
        if self.current is None:
            return
        self.current.set_attributes(_attributes({**attributes, "compute_s": timings.compute_s}))
        context = trace.set_span_in_context(self.current)
        cursor = _ns(time.time() - timings.compute_s)
        for name in STAGES:
            seconds = getattr(timings, f"{name}_s", None)
            if seconds is None:
                continue
            stage = tracer.start_span(name, context=context, start_time=cursor, attributes={"heta.seconds": seconds})
            cursor += _ns(seconds)
            stage.end(end_time=cursor)

    def annotate(self, **attributes: Any) -> None:
        if self.current is not None:
            self.current.set_attributes(_attributes(attributes))

    @contextlib.contextmanager
    def step(self, name: str):
        if self.current is None:
            yield
            return
        with tracer.start_as_current_span(name, context=trace.set_span_in_context(self.current)):
            yield


@contextlib.contextmanager
def job_span(job: dict[str, str]) -> Iterator[JobSpan]:
    """The queue wait (submission to start) and the job's span from its start to the end of the
    block, both children of the API's enqueue span whose context the job carries."""
    if not _enabled:
        yield JobSpan(None)
        return
    parent = propagate.extract({"traceparent": job.get("traceparent", "")})
    started = float(job.get("started") or time.time())
    tracer.start_span("queue wait", context=parent, start_time=_ns(float(job["created"]))).end(end_time=_ns(started))
    attributes = _attributes({"job_id": job["id"], "model": job["model"], "attempt": int(job.get("attempts") or 1)})
    current = tracer.start_span("job", context=parent, start_time=_ns(started), attributes=attributes)
    with trace.use_span(current, end_on_exit=True):
        yield JobSpan(current)
