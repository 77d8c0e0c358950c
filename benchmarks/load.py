"""Bounded load test of a running HETA service on loopback: N requests, C concurrent.

    python benchmarks/load.py --url http://127.0.0.1:8000 --requests 200 --concurrency 16

Prints throughput and latency percentiles of POST /attribute (wait for the result). Traffic goes
only to the given local URL; the run stops after --requests requests or --timeout seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx


async def run(url: str, total: int, concurrency: int, timeout: float, body: dict) -> dict:
    latencies, statuses = [], {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    stop_at = time.monotonic() + timeout

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            while not queue.empty() and time.monotonic() < stop_at:
                queue.get_nowait()
                started = time.perf_counter()
                response = await http.post("/attribute", json=body)
                latencies.append(time.perf_counter() - started)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "throughput_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))],
        "statuses": statuses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--text", default="the cat sat on the mat . the dog ate the bone")
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    if not args.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise SystemExit("load.py only targets loopback addresses")
    body = {"text": args.text, "config": {"samples": args.samples}, "wait": 60}
    report = asyncio.run(run(args.url, args.requests, args.concurrency, args.timeout, body))
    print(
        f"{report['requests']} requests in {report['seconds']:.1f} s -> {report['throughput_per_s']:.1f}/s; "
        f"latency p50 {report['p50_ms']:.0f} ms, p95 {report['p95_ms']:.0f} ms; statuses {report['statuses']}"
    )


if __name__ == "__main__":
    main()
