"""Prometheus metrics, prefix ``heta_``, correct across API and worker processes.

- Request metrics are the API process's own (each API replica is scraped on its own, as usual).
- Job metrics are written by workers into Redis (``heta:metrics``: counters and a histogram as hash
  fields) and read back by whichever API process is scraped, so they count every worker on every
  machine exactly once.
- Queue depth and oldest-job age are read from the streams at scrape time; worker busy/idle and GPU
  memory from the worker registry.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from heta_core import METHOD_STAGES, METHODS

from .store import CACHE_BYTES, METRICS_KEY, queue_state, read_queue

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
OUTCOMES = ("done", "failed", "cancelled", "dead_lettered", "reclaimed")


def api_metrics(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    requests = Counter(
        "heta_requests", "HTTP requests by route and status", ["route", "method", "status"], registry=registry
    )
    latency = Histogram(
        "heta_request_seconds", "HTTP request latency", ["route", "method"], buckets=LATENCY_BUCKETS, registry=registry
    )
    return requests, latency


def record_job(
    client,
    outcome: str,
    seconds: float | None = None,
    method: str | None = None,
    stages: dict | None = None,
    hvps: int = 0,
) -> None:
    """Worker side: one finished (or reclaimed) job into the shared counters. ``stages``: compute
    seconds by stage name (``heta_core.METHOD_STAGES[method]``)."""
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(METRICS_KEY, f"jobs|{outcome}", 1)
    if seconds is not None:
        for bound in LATENCY_BUCKETS:
            if seconds <= bound:
                pipe.hincrby(METRICS_KEY, f"job_seconds_bucket|{bound}", 1)
        pipe.hincrby(METRICS_KEY, "job_seconds_count", 1)
        pipe.hincrbyfloat(METRICS_KEY, "job_seconds_sum", seconds)
    for stage, value in (stages or {}).items():
        if method in METHODS and stage in METHOD_STAGES[method] and value is not None:
            pipe.hincrbyfloat(METRICS_KEY, f"compute|{method}|{stage}", value)
    if hvps:
        pipe.hincrby(METRICS_KEY, "hvps", hvps)
    pipe.execute()


class RedisCollector:
    """Collects the shared job, queue and worker metrics at scrape time (synchronous client)."""

    def __init__(self, client, models: list[str]):
        self.client, self.models = client, models

    def collect(self):
        from .registry import live_workers, serving

        stored = self.client.hgetall(METRICS_KEY)
        jobs = CounterMetricFamily("heta_jobs", "Jobs by outcome", labels=["outcome"])
        for outcome in OUTCOMES:
            jobs.add_metric([outcome], float(stored.get(f"jobs|{outcome}", 0)))
        yield jobs
        buckets = []
        for bound in LATENCY_BUCKETS:
            running = int(stored.get(f"job_seconds_bucket|{bound}", 0))
            buckets.append((str(float(bound)), running))
        count = int(stored.get("job_seconds_count", 0))
        buckets.append(("+Inf", count))
        histogram = HistogramMetricFamily("heta_job_seconds", "Job latency, submission to completion")
        histogram.add_metric([], buckets, sum_value=float(stored.get("job_seconds_sum", 0)))
        yield histogram
        compute = CounterMetricFamily(
            "heta_compute_seconds",
            "Compute seconds by method and stage (HETA: flow, kl, hessian; baselines: baseline)",
            labels=["method", "stage"],
        )
        for method in METHODS:
            for stage in METHOD_STAGES[method]:
                compute.add_metric([method, stage], float(stored.get(f"compute|{method}|{stage}", 0)))
        yield compute
        yield CounterMetricFamily("heta_hvps", "Hessian-vector products computed", value=float(stored.get("hvps", 0)))
        lookups = CounterMetricFamily("heta_cache_requests", "Result cache lookups by result", labels=["result"])
        for result in ("hit", "miss"):
            lookups.add_metric([result], float(stored.get(f"cache|{result}", 0)))
        yield lookups

        yield GaugeMetricFamily(
            "heta_cache_bytes", "Bytes of results in the result cache", value=float(self.client.get(CACHE_BYTES) or 0)
        )

        depth = GaugeMetricFamily("heta_queue_depth", "Jobs waiting (not yet picked up) per model", labels=["model"])
        age = GaugeMetricFamily(
            "heta_oldest_job_age_seconds", "Age of the oldest unfinished job per model", labels=["model"]
        )
        now = time.time()
        for model in self.models:
            waiting, oldest = queue_state(
                read_queue(self.client.pipeline(transaction=False), model).execute(raise_on_error=False), now
            )
            depth.add_metric([model], float(waiting))
            age.add_metric([model], oldest)
        yield depth
        yield age

        workers = live_workers(self.client)
        state = GaugeMetricFamily("heta_workers", "Live workers by state", labels=["state"])
        busy = sum(1 for w in workers if w.get("busy"))
        state.add_metric(["busy"], float(busy))
        state.add_metric(["idle"], float(len(workers) - busy))
        yield state
        # every served model gets a sample, 0 included: "no worker for this model" must be a value an
        # alert can match, not a missing series
        per_model = GaugeMetricFamily(
            "heta_model_workers", "Live workers serving each model (draining ones excluded)", labels=["model"]
        )
        for model in self.models:
            per_model.add_metric([model], float(len(serving(workers, model))))
        yield per_model
        memory = GaugeMetricFamily("heta_gpu_memory_bytes", "GPU memory per worker", labels=["worker", "kind"])
        for w in workers:
            for kind in ("allocated", "peak", "total"):  # total: the device's capacity, when the worker reports it
                if w.get(f"gpu_{kind}") is not None:
                    memory.add_metric([w["id"], kind], float(w[f"gpu_{kind}"]))
        yield memory
