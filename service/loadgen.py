"""``heta bench-load``: open-loop load on a HETA service over loopback, stepping the arrival rate
past capacity, and an optional soak at a fixed rate.

Requests arrive on a fixed schedule (open loop: a slow server does not slow the arrivals down),
each a ``POST /attribute`` that waits for its result. Per step it prints the offered rate, the
throughput of completed attributions, latency percentiles, the error rate (any non-2xx), 5xx and
429 counts with the 429s' own latency, and the **queue overhead**: end-to-end latency minus the
engine's compute time (``meta.timings.compute_s`` of the result). Every accepted job is then
followed to its final state: a job that never ends is counted as lost. ``--soak S`` adds S seconds
at the last rate below capacity and reports the resident memory of the API and worker processes at
its start and end (``--serve`` only: it needs the processes' pids).

``--batch-jobs 1,8`` compares workers that run concurrent jobs one at a time with workers that run
up to 8 together (HETA_BATCH_JOBS), side by side in one run: one service per value, all up at once,
each step sent to each service in turn (so every step's numbers for both come from the same minutes
of the machine). ``--mix`` sends heta-demo prompts of different lengths instead of one.

Only loopback addresses are accepted; every run is bounded by its steps' durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PROMPT = {"text": "c=6 e=6 b=3 h=3 m=6 ? h", "target_text": " 3"}
# --mix: heta-demo prompts of 4 to 17 tokens
MIX = [
    PROMPT,
    {"text": "a=2 d=5 ? d", "target_text": " 5"},
    {"text": "a=2 d=5 g=2 k=9 n=5 p=9 c=4 e=4 ? g", "target_text": " 2"},
    {"text": "b=3 h=3 m=6 ? m", "target_text": " 6"},
    {"text": "k=9 n=5 p=9 c=4 e=4 g=1 ? p", "target_text": " 9"},
]
LOOPBACK = ("http://127.", "http://localhost", "http://[::1]")


@dataclass
class Outcome:
    status: int
    seconds: float
    compute_s: float | None = None
    job_id: str | None = None
    retry_after: bool = False


@dataclass
class Step:
    rate: float
    seconds: float
    outcomes: list[Outcome] = field(default_factory=list)

    def report(self) -> dict:
        done = [o for o in self.outcomes if o.status == 200]
        limited = [o for o in self.outcomes if o.status == 429]
        overhead = [1000 * (o.seconds - o.compute_s) for o in done if o.compute_s is not None]
        return {
            "offered_per_s": self.rate,
            "requests": len(self.outcomes),
            "throughput_per_s": len(done) / self.seconds,
            "latency_ms": _percentiles([1000 * o.seconds for o in done]),
            "queue_overhead_ms": _percentiles(overhead),
            "error_rate": 1 - len(done) / max(1, len(self.outcomes)),
            "status_5xx": sum(o.status >= 500 for o in self.outcomes),
            "status_429": len(limited),
            "status_429_without_retry_after": sum(not o.retry_after for o in limited),
            "latency_429_ms": _percentiles([1000 * o.seconds for o in limited]),
            "statuses": {
                str(s): sum(o.status == s for o in self.outcomes) for s in sorted({o.status for o in self.outcomes})
            },
        }


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": statistics.median(ordered), "p95": pick(0.95), "p99": pick(0.99)}


class Connections:
    """Keep-alive HTTP/1.1 connections for the measured requests, on bare asyncio streams.

    The load generator's own cost lands in the "queue overhead" it reports: on 2 shared cores an
    httpx request spends ~1.5 ms in the client (``GET /healthz``: 2.1 ms through httpx, 0.7 ms
    through curl), about as much as the whole queue. uvicorn answers with a Content-Length, so a
    request is one write and two reads. uvicorn closes a connection idle for 5 s: one idle for
    ``IDLE_S`` is not reused (a request on a connection the server is closing would be lost)."""

    IDLE_S = 2.0

    def __init__(self, url: str):
        host, _, port = url.removeprefix("http://").rstrip("/").rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self.idle:
            reader, writer, since = self.idle.pop()
            if time.monotonic() - since < self.IDLE_S and not reader.at_eof():
                return reader, writer
            writer.close()
        return await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, payload: bytes) -> tuple[int, dict[str, str], bytes]:
        reader, writer = await self._connection()
        try:
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in head[1:] if line)
            }
            if "content-length" not in headers:
                raise ValueError("a response without Content-Length")
            body = await reader.readexactly(int(headers["content-length"]))
        except BaseException:
            writer.close()
            raise
        if headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            self.idle.append((reader, writer, time.monotonic()))
        return int(head[0].split()[1]), headers, body

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()


async def _one(http: Connections, payload: bytes, step: Step) -> None:
    started = time.perf_counter()
    try:
        status, headers, content = await http.post("/attribute", payload)
    except (OSError, EOFError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        step.outcomes.append(Outcome(599, time.perf_counter() - started))  # a reset or a broken answer: never expected
        return
    seconds = time.perf_counter() - started
    outcome = Outcome(status, seconds, retry_after="retry-after" in headers)
    if status == 200:
        result = json.loads(content)
        outcome.compute_s, outcome.job_id = result["meta"]["timings"]["compute_s"], result["job_id"]
    elif status == 202:
        outcome.job_id = json.loads(content)["job_id"]
    step.outcomes.append(outcome)


async def run_step(http: Connections, rate: float, seconds: float, bodies: list[dict]) -> Step:
    """``rate`` requests per second for ``seconds``, cycling through ``bodies``."""
    step, payloads = Step(rate, seconds), [json.dumps(body).encode() for body in bodies]
    tasks, start, count = [], time.perf_counter(), int(rate * seconds)
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one(http, payloads[i % len(payloads)], step)))
    await asyncio.gather(*tasks)
    return step


async def lost_jobs(http: httpx.AsyncClient, steps: list[Step], grace_s: float) -> int:
    """Accepted jobs (200 or 202) that do not reach a final state within ``grace_s``."""
    pending = {o.job_id for s in steps for o in s.outcomes if o.job_id and o.status == 202}
    deadline = time.monotonic() + grace_s
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            job = (await http.get(f"/jobs/{job_id}")).json()
            if job.get("status") in ("done", "failed", "cancelled", "dead_lettered"):
                pending.discard(job_id)
        await asyncio.sleep(0.2)
    return len(pending)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as statm:
        return round(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def label(pid: int) -> str:
    """``pid role``: the service's processes by what they run (serve, worker, redis-server)."""
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    words = [w.decode(errors="replace") for w in cmdline if w]
    role = next((w for w in ("worker", "serve") if w in words), Path(words[0].split()[0]).name if words else "?")
    return f"{pid} {role}"


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found, stack = [pid], [pid]
    while stack:
        parent = stack.pop()
        children = [child for child, p in parents.items() if p == parent]
        found += children
        stack += children
    return found


async def benchmark(
    url: str, rates: list[float], step_s: float, soak_s: float, pids: list[int] | None, mix: bool = False
) -> dict:
    bodies = [{**prompt, "wait": 60} for prompt in (MIX if mix else [PROMPT])]
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    measured = Connections(url)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        for body in bodies * 2:  # warm-up: lazy imports, allocator, first kernels
            await measured.post("/attribute", json.dumps(body).encode())
        steps = [await run_step(measured, rate, step_s, bodies) for rate in rates]
        soak = None
        if soak_s:
            below = [s for s in steps if s.report()["status_429"] == 0] or steps[:1]
            rate = below[-1].rate
            names = {pid: label(pid) for pid in pids or []}
            before = {names[pid]: rss_mb(pid) for pid in pids or []}
            soak_step = await run_step(measured, rate, soak_s, bodies)
            after = {names[pid]: rss_mb(pid) for pid in pids or [] if Path(f"/proc/{pid}").exists()}
            soak = {**soak_step.report(), "seconds": soak_s, "rss_mb_start": before, "rss_mb_end": after}
            steps.append(soak_step)
        lost = await lost_jobs(http, steps, grace_s=120)
    measured.close()
    return {"steps": [s.report() for s in steps[: len(rates)]], "soak": soak, "lost_jobs": lost}


# a step is "below capacity" while the service keeps up with it and jobs barely queue
KEEPS_UP = 0.95  # done/s against the offered rate
OVERHEAD_MS = 5.0  # p50 of the queue overhead


def capacity(steps: list[dict]) -> dict:
    """The largest throughput of any step, and the largest offered rate the service kept up with at a p50
    queue overhead of at most 5 ms (the issue's yardstick), with that step's p50 latency."""
    kept = [
        s
        for s in steps
        if s["throughput_per_s"] >= KEEPS_UP * s["offered_per_s"]
        and s["error_rate"] == 0
        and s["queue_overhead_ms"]["p50"] is not None
        and s["queue_overhead_ms"]["p50"] <= OVERHEAD_MS
    ]
    best = max(kept, key=lambda s: s["offered_per_s"], default=None)
    return {
        "max_throughput_per_s": max((s["throughput_per_s"] for s in steps), default=0.0),
        "rate_per_s_at_overhead_5ms": best["offered_per_s"] if best else None,
        "p50_ms_there": best["latency_ms"]["p50"] if best else None,
    }


async def compare(urls: dict[str, str], rates: list[float], step_s: float, mix: bool) -> dict:
    """Each step sent to each service in turn (side by side); per service its steps and capacity, and
    the ratios of the last service's to the first's."""
    bodies = [{**prompt, "wait": 60} for prompt in (MIX if mix else [PROMPT])]
    connections = {name: Connections(url) for name, url in urls.items()}
    steps: dict[str, list[Step]] = {name: [] for name in urls}
    for http in connections.values():
        for body in bodies * 2:
            await http.post("/attribute", json.dumps(body).encode())
    for rate in rates:
        for name, http in connections.items():
            steps[name].append(await run_step(http, rate, step_s, bodies))
            await asyncio.sleep(min(2.0, step_s))  # the queue drains before the other service's turn
    lost = {}
    for name, url in urls.items():
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            lost[name] = await lost_jobs(http, steps[name], grace_s=120)
        connections[name].close()
    services = {name: {"steps": [s.report() for s in steps[name]], "lost_jobs": lost[name]} for name in urls}
    for report in services.values():
        report["capacity"] = capacity(report["steps"])
    first, last = (services[name]["capacity"] for name in (list(urls)[0], list(urls)[-1]))
    low = {name: services[name]["steps"][0]["latency_ms"]["p50"] for name in urls}
    ratio = lambda a, b: (a / b) if a and b else None  # noqa: E731
    return {
        "services": services,
        "throughput_ratio": ratio(last["max_throughput_per_s"], first["max_throughput_per_s"]),
        "capacity_ratio": ratio(last["rate_per_s_at_overhead_5ms"], first["rate_per_s_at_overhead_5ms"]),
        "low_rate_latency_ratio": ratio(low[list(urls)[-1]], low[list(urls)[0]]),
    }
