"""The ``heta bench-load`` command around :mod:`heta_service.loadgen`: its options, the local
services it starts (``--serve``, ``--batch-jobs``, ``--compare``) and the tables it prints."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

import httpx

from .loadgen import LOOPBACK, OVERHEAD_MS, benchmark, compare, tree


def format_report(report: dict) -> str:
    def ms(values: dict, key: str) -> str:
        return "—" if values[key] is None else f"{values[key]:.1f}"

    lines = ["offered/s  done/s   p50 ms   p95 ms   p99 ms  overhead p50/p99 ms  errors  5xx   429  429 p50 ms"]
    rows = report["steps"] + ([report["soak"]] if report["soak"] else [])
    for row in rows:
        latency, overhead = row["latency_ms"], row["queue_overhead_ms"]
        lines.append(
            f"{row['offered_per_s']:>9.0f} {row['throughput_per_s']:>7.1f} {ms(latency, 'p50'):>8} "
            f"{ms(latency, 'p95'):>8} {ms(latency, 'p99'):>8}  {ms(overhead, 'p50'):>9} / {ms(overhead, 'p99'):<7}  "
            f"{100 * row['error_rate']:>5.1f}% {row['status_5xx']:>4} {row['status_429']:>5}  "
            f"{ms(row['latency_429_ms'], 'p50'):>9}"
        )
    if report["soak"]:
        soak = report["soak"]
        lines.append(f"soak {soak['seconds']:.0f} s: RSS MB start {soak['rss_mb_start']} end {soak['rss_mb_end']}")
    lines.append(f"lost jobs: {report['lost_jobs']}")
    return "\n".join(lines)


def format_comparison(report: dict) -> str:
    lines = []
    for name, service in report["services"].items():
        lines += [f"== {name}", format_report({**service, "soak": None})]
        c = service["capacity"]
        lines.append(
            f"capacity: {c['max_throughput_per_s']:.1f} done/s at most; kept up with p50 overhead <= {OVERHEAD_MS:.0f} "
            f"ms up to {c['rate_per_s_at_overhead_5ms']} offered/s (p50 latency there {c['p50_ms_there']} ms)"
        )
    first, last = list(report["services"])[0], list(report["services"])[-1]
    show = lambda value: "—" if value is None else f"{value:.2f}x"  # noqa: E731
    lines.append(
        f"{last} vs {first}: max throughput {show(report['throughput_ratio'])}, capacity at <= 5 ms overhead "
        f"{show(report['capacity_ratio'])}, p50 latency at the lowest rate {show(report['low_rate_latency_ratio'])}"
    )
    return "\n".join(lines)


@contextlib.contextmanager
def local_service(workers: int, torch_threads: int = 1, **settings: str):
    """``heta serve`` with heta-demo on a free loopback port and a temporary Redis directory. One
    torch thread per worker by default: heta-demo's matrices are too small for a second thread to pay
    for its wake-ups (measured on 2 cores: ~30 ms per job with one, ~40 ms with two)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    directory = tempfile.mkdtemp(prefix="heta-load-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HETA_") and k != "REDIS_URL"}
    env.update(
        HETA_PORT=str(port),
        HETA_REDIS_DIR=os.path.join(directory, "redis"),
        HETA_WORKERS=str(workers),
        HETA_TORCH_THREADS=str(torch_threads),
        HETA_RATE_LIMIT_PER_MINUTE="1000000",
        HF_HUB_OFFLINE="1",
    )
    env.update({f"HETA_{name.upper()}": value for name, value in settings.items()})
    log = open(os.path.join(directory, "serve.log"), "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "heta_core.cli", "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None:
                raise SystemExit(f"heta bench-load: error: heta serve exited; see {log.name}")
            time.sleep(0.25)
        yield url, proc.pid
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        log.close()


def add_arguments(parser) -> None:
    parser.add_argument("--url", help="a running service (loopback only); default: start heta serve with heta-demo")
    parser.add_argument("--workers", type=int, default=1, help="workers of the service --url is not given (default 1)")
    parser.add_argument(
        "--torch-threads", type=int, default=1, help="torch threads per worker of that service (default 1)"
    )
    parser.add_argument(
        "--rates", default="5,10,20,40,80", help="arrival rates per second, one step each (default 5,10,20,40,80)"
    )
    parser.add_argument("--step-seconds", type=float, default=10.0, help="duration of each step (default 10)")
    parser.add_argument(
        "--soak", type=float, default=0.0, metavar="S", help="then S seconds at the last rate without 429s"
    )
    parser.add_argument("--mix", action="store_true", help="heta-demo prompts of different lengths instead of one")
    parser.add_argument(
        "--batch-jobs",
        default=None,
        metavar="1,8",
        help="compare services whose workers run up to N concurrent jobs together (HETA_BATCH_JOBS), side by side",
    )
    parser.add_argument(
        "--compare",
        default=None,
        metavar="SETTINGS;SETTINGS",
        help="compare services with these settings side by side, e.g. 'batch_jobs=8,batch_packing=pad;"
        "batch_jobs=8,batch_packing=length' (HETA_<NAME> each)",
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")


def _compared(args) -> list[dict[str, str]]:
    """The settings of each service to compare (--batch-jobs or --compare), or [] for one service."""
    if args.batch_jobs is None and args.compare is None:
        return []
    if args.batch_jobs is not None and args.compare is not None:
        raise SystemExit("heta bench-load: error: --batch-jobs and --compare: pass one of them")
    if args.url or args.soak:
        raise SystemExit("heta bench-load: error: a comparison starts its own services: no --url or --soak")
    if args.batch_jobs is not None:
        values = [v.strip() for v in args.batch_jobs.split(",") if v.strip()]
        if len(values) < 2 or not all(v.isdigit() and int(v) >= 1 for v in values):
            raise SystemExit("heta bench-load: error: --batch-jobs needs two or more integers >= 1, e.g. 1,8")
        return [{"batch_jobs": v} for v in values]
    specs = []
    for spec in args.compare.split(";"):
        pairs = [pair.split("=", 1) for pair in spec.split(",") if pair.strip()]
        if not pairs or any(len(pair) != 2 or not pair[0].strip().isidentifier() for pair in pairs):
            raise SystemExit(f"heta bench-load: error: --compare: {spec!r} is not name=value[,name=value]")
        spec = {name.strip().lower(): value.strip() for name, value in pairs}
        for name in ("torch_threads", "workers"):  # the two settings the load generator's own service takes itself
            if name in spec and not (spec[name].isdigit() and int(spec[name]) >= 1):
                raise SystemExit(
                    f"heta bench-load: error: --compare: {name} must be an integer >= 1, got {spec[name]!r}"
                )
        specs.append(spec)
    if len(specs) < 2:
        raise SystemExit("heta bench-load: error: --compare needs two or more settings separated by ';'")
    return specs


def run_from_args(args) -> int:
    try:
        rates = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        raise SystemExit(f"heta bench-load: error: --rates must be numbers, got {args.rates!r}") from None
    if (
        not rates
        or min(rates) <= 0
        or args.step_seconds <= 0
        or args.soak < 0
        or args.workers < 1
        or args.torch_threads < 1
    ):
        raise SystemExit(
            "heta bench-load: error: rates and --step-seconds must "
            "be > 0, --soak >= 0, --workers and --torch-threads >= 1"
        )
    if args.url and not args.url.startswith(LOOPBACK):
        raise SystemExit("heta bench-load: error: --url must be a loopback address")
    specs = _compared(args)
    if specs:
        with contextlib.ExitStack() as stack:
            urls = {}
            for spec in specs:
                settings = dict(spec)
                threads = int(settings.pop("torch_threads", args.torch_threads))  # local_service's own argument
                workers = int(settings.pop("workers", args.workers))
                name = ",".join(f"HETA_{k.upper()}={v}" for k, v in spec.items())
                urls[name] = stack.enter_context(local_service(workers, threads, **settings))[0]
            report = asyncio.run(compare(urls, rates, args.step_seconds, args.mix))
        print(json.dumps(report, indent=2) if args.format == "json" else format_comparison(report))
        return 0
    with contextlib.ExitStack() as stack:
        if args.url:
            url, pids = args.url, None
        else:
            url, root = stack.enter_context(local_service(args.workers, args.torch_threads))
            pids = tree(root)
        report = asyncio.run(benchmark(url, rates, args.step_seconds, args.soak, pids, args.mix))
    print(json.dumps(report, indent=2) if args.format == "json" else format_report(report))
    return 0
