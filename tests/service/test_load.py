"""A short run of `heta bench-load` (the long one is a benchmark, README): stepping the arrival rate
past capacity loses no job, answers no 5xx, and answers overload with 429 + Retry-After, fast."""

import json
import subprocess

from ..helpers import heta_command, heta_in_process


def test_load_steps_past_capacity_without_losses_or_server_errors(tmp_path):
    done = subprocess.run(
        heta_command("bench-load", "--rates", "3,150", "--step-seconds", "4", "--soak", "3", "--format", "json"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    below, above = report["steps"]
    assert report["lost_jobs"] == 0
    assert all(step["status_5xx"] == 0 for step in (*report["steps"], report["soak"]))
    assert below["status_429"] == 0 and below["throughput_per_s"] > 0 and below["queue_overhead_ms"]["p50"] is not None
    # 150 requests/s is far past one CPU worker (~50/s, batched or not): the overflow is refused at once, with
    # Retry-After
    assert above["status_429"] > 0 and above["status_429_without_retry_after"] == 0
    assert above["latency_429_ms"]["p50"] < below["latency_ms"]["p50"] + 1000
    assert report["soak"]["rss_mb_start"] and set(report["soak"]["rss_mb_end"]) == set(report["soak"]["rss_mb_start"])


def test_bad_options_are_one_line_and_start_nothing(capsys):
    for options in (
        ["--rates", "5,x"],
        ["--rates", "0"],
        ["--torch-threads", "0"],
        ["--workers", "0"],
        ["--url", "http://example.com"],
    ):
        done = heta_in_process(capsys, "bench-load", *options)
        assert done.returncode != 0 and done.stdout == "", options
        assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("heta bench-load: error:"), (
            done.stderr
        )


def test_batching_side_by_side_loses_nothing_and_reports_both_services():
    done = subprocess.run(
        heta_command(
            "bench-load", "--batch-jobs", "1,4", "--rates", "2,30", "--step-seconds", "3", "--mix", "--format", "json"
        ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert list(report["services"]) == ["HETA_BATCH_JOBS=1", "HETA_BATCH_JOBS=4"]
    for service in report["services"].values():
        assert service["lost_jobs"] == 0 and [s["offered_per_s"] for s in service["steps"]] == [2, 30]
        assert all(step["status_5xx"] == 0 for step in service["steps"])
        assert service["capacity"]["max_throughput_per_s"] > 0
    assert report["throughput_ratio"] > 0 and report["low_rate_latency_ratio"] > 0


def test_comparison_options_are_checked(capsys):
    for options in (
        ["--batch-jobs", "8"],
        ["--batch-jobs", "1,x"],
        ["--compare", "batch_jobs=1"],
        ["--compare", "a;b"],
        ["--batch-jobs", "1,8", "--soak", "5"],
        ["--compare", "torch_threads=x;torch_threads=2"],
    ):
        done = heta_in_process(capsys, "bench-load", *options)
        assert done.returncode != 0 and done.stdout == "", options
        assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("heta bench-load: error:"), (
            done.stderr
        )
