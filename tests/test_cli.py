"""The ``heta`` command, run as a real process (refusals through the same entry point in this process:
see ``heta_in_process``)."""

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from heta_core.cli.attribute import bar

from .helpers import ROOT, heta, heta_in_process

TEXT = "paris is the capital of france"


def test_console_script_is_installed():
    assert (Path(sys.executable).parent / "heta").exists() or any(
        (Path(d) / "heta").exists() for d in os.environ.get("PATH", "").split(os.pathsep)
    )


def test_attribute_json(model_dir):
    done = heta("attribute", "--model", model_dir, "--text", TEXT, "--samples", "3", "--seed", "4", "--format", "json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert [t["text"] for t in payload["tokens"]] == TEXT.split()[:-1]
    assert payload["targets"][0]["text"] == "france" and payload["targets"][0]["position"] == 5
    assert payload["meta"]["config"]["num_hvp_samples"] == 3 and payload["meta"]["config"]["seed"] == 4
    assert all(t["score"] > 0 for t in payload["tokens"])


def test_attribute_table_has_a_bar_per_score(model_dir):
    done = heta("attribute", "--model", model_dir, "--text", TEXT, "--target-position", "3", "--samples", "2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "target 'capital' at position 3" in lines[0]
    rows = lines[2:]
    assert [row.split()[1] for row in rows] == ["paris", "is", "the"]
    assert all(row.count("█") >= 4 or "▏" in row for row in rows)  # four bar columns, the largest full
    assert sum(row.count("█" * 12) for row in rows) == 4  # each column's maximum is a full bar


def test_bar_rendering():
    assert bar(1.0, 1.0) == "█" * 12
    assert bar(0.5, 1.0) == "█" * 6 + " " * 6
    assert bar(0.0, 1.0) == " " * 12 and bar(1.0, 0.0) == " " * 12
    assert bar(1 / 96, 1.0).startswith("▏")


@pytest.mark.parametrize(
    "args, words",
    [
        (["--text", ""], "empty"),
        (["--text", "paris"], "at least 2 tokens"),
        (["--text", TEXT, "--target-position", "9"], "out of range"),
        (["--text", TEXT, "--samples", "0"], "num_hvp_samples"),
        (["--text", TEXT, "--samples", "many"], "invalid int value"),
        (["--text", TEXT, "--mask", "blank"], "mask must be one of"),
        (["--text", TEXT, "--format", "xml"], "invalid choice"),
        (["--text", TEXT, "--dtype", "int8"], "dtype must be one of"),
        (["--text", TEXT, "--bogus"], "unrecognized arguments"),
        (["--text", TEXT, "--device", "toaster"], "device"),
        (["--text", TEXT, "--device", "cuda:3"], "no such CUDA device"),
        ([], "required"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(model_dir, args, words, capsys):
    done = heta_in_process(capsys, "attribute", "--model", model_dir, *args)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("heta: error:") and words in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["--text", TEXT, "--samples", "many"], "invalid int value"),
        (["--text", "paris is", "--overlap", "1.5"], "overlap must be"),
    ],
)
def test_a_refusal_in_a_real_process_is_its_one_line_only(model_dir, args, words):
    """The refusals above, as the shell sees them: exit status 2, nothing on stdout, one line on
    stderr (no warning, log line or traceback from anything the command imported or loaded)."""
    done = heta("attribute", "--model", model_dir, *args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("heta: error:") and words in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_unknown_model_is_one_line(tmp_path):
    done = heta("attribute", "--model", str(tmp_path / "missing-model"), "--text", TEXT)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "missing-model" in done.stderr and "Traceback" not in done.stderr
    assert "no such directory" in done.stderr


def test_a_hub_id_without_network_or_cache_fails_at_once_in_one_line(tmp_path):
    """HF_HUB_OFFLINE unset and the Hub unreachable (a closed local port stands in for no network):
    one line naming the way out, instead of the Hub client's retries."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(PYTHONPATH=str(ROOT), HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9")
    done = subprocess.run(
        [sys.executable, "-m", "heta_core.cli", "attribute", "--model", "someorg/somemodel", "--text", TEXT],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert (
        "not in the local Hugging Face cache and the Hub cannot be reached" in done.stderr
        and "heta download" in done.stderr
    )


def test_version():
    done = heta("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"heta {importlib.metadata.version('heta')}"


def test_bench_prints_both_paths_and_their_ratio(capsys):
    # each path in this `heta bench` process (HETA_BENCH_INPROCESS=1, as scripts/gpu-check --cpu runs it):
    # at these shapes each path's fresh process (the default, run by the second call) is seconds of
    # start-up around milliseconds of work
    done = heta(
        "bench",
        "--layers",
        "2",
        "--width",
        "32",
        "--heads",
        "4",
        "--vocab",
        "97",
        "--context",
        "6",
        "--samples",
        "2",
        "--repeats",
        "1",
        "--format",
        "json",
        HETA_BENCH_INPROCESS="1",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["fast_seconds"] > 0 and report["reference_seconds"] > 0
    assert report["speedup"] == pytest.approx(report["reference_seconds"] / report["fast_seconds"])
    assert report["hvps"] == 12 and report["fast_gflop"] > 0 and report["matmul_gflops"] > 0
    # float32: the KL is a sum of p·(log p − log q) that cancels to a small number, whose rounding is ~1e-4
    # of it (the float64 tests compare the paths to 1e-10), and the default normalize="simplex" gives
    # that term half the score's weight; everything else agrees to float32 precision
    assert report["max_rel_diff"]["kl"] < 1e-3 and report["max_rel_diff"]["scores"] < 1e-3
    assert max(v for k, v in report["max_rel_diff"].items() if k not in ("kl", "scores")) < 1e-5
    text = heta(
        "bench",
        "--layers",
        "1",
        "--width",
        "16",
        "--heads",
        "2",
        "--vocab",
        "50",
        "--context",
        "4",
        "--samples",
        "1",
        "--repeats",
        "1",
        "--no-reference",
    )
    assert text.returncode == 0 and "GFLOP/s" in text.stdout and "reference" not in text.stdout
    bad = heta_in_process(capsys, "bench", "--width", "30", "--heads", "4")
    assert bad.returncode == 2 and "multiple" in bad.stderr


def test_span_chat_and_granularity_flags(model_dir):
    done = heta(
        "attribute",
        "--model",
        model_dir,
        "--text",
        "paris is the capital of",
        "--target-text",
        " france .",
        "--target-mode",
        "each",
        "--samples",
        "1",
        "--format",
        "json",
    )
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["target_mode"] == "each" and [t["text"] for t in payload["targets"]] == ["france", "."]
    assert len(payload["tokens"][0]["score"]) == 2

    messages = json.dumps([{"role": "user", "content": "the cat sat on the mat ."}])
    done = heta(
        "attribute",
        "--model",
        model_dir,
        "--messages",
        messages,
        "--generate",
        "2",
        "--samples",
        "1",
        "--granularity",
        "word",
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split()[1] for line in done.stdout.splitlines() if line[:4].strip().isdigit()]
    assert rows == ["the", "cat", "sat", "on", "the", "mat", "."]  # words of the content, template left out

    done = heta(
        "attribute",
        "--model",
        model_dir,
        "--text",
        "the cat sat . the dog ate",
        "--granularity",
        "sentence",
        "--samples",
        "1",
        "--low-rank",
        "4",
        "--curvature-layers",
        "1",
    )
    assert done.returncode == 0, done.stderr
    assert "the cat sat ." in done.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["--messages", "[{"], "not valid JSON"),
        (["--messages", '[{"role": "robot", "content": "the cat"}]'], "unknown role"),
        (["--messages", "[]"], "non-empty"),
        (["--messages", "@/nonexistent/file.json"], "cannot read --messages file"),
        (["--text", "paris is", "--messages", "[]"], "not allowed with argument"),
        (["--text", "paris is", "--target-text", " the", "--generate", "2"], "not allowed with argument"),
        (["--text", "paris is", "--generate", "0"], "generate must be an integer >= 1"),
        (["--text", "paris is", "--granularity", "page"], "invalid choice"),
        (["--text", "paris is", "--overlap", "1.5"], "overlap must be"),
        (["--text", "paris is", "--curvature-layers", "9"], "exceeds"),
    ],
)
def test_bad_span_and_chat_input_is_one_line(model_dir, args, words, capsys):
    done = heta_in_process(capsys, "attribute", "--model", model_dir, *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in done.stderr, done.stderr


def test_bench_long_prints_measurement_next_to_estimate():
    done = heta(
        "bench-long",
        "--layers",
        "2",
        "--width",
        "32",
        "--heads",
        "4",
        "--vocab",
        "97",
        "--context",
        "24",
        "--samples",
        "2",
        "--format",
        "json",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["measured"] == {
        "hvps": report["estimate"]["hvps"],
        "forward_tokens": report["estimate"]["forward_tokens"],
    }
    assert report["peak_rss_mb"] > 0 and set(report["stage_seconds"]) == {"flow", "kl", "hessian", "total"}


def test_bench_approx_reports_every_approximation():
    done = heta("bench-approx", "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert {r["approximation"] for r in rows} >= {
        "low_rank=32",
        "curvature=ggn",
        "curvature_layers=2",
        "window=12,overlap=0.5",
    }
    assert all(-1 <= r["s_spearman"] <= 1 and 0 <= r["score_top5"] <= 1 for r in rows)


def test_toy_model_command_writes_a_loadable_model(tmp_path, capsys):
    path = tmp_path / "toy"
    done = heta("toy-model", str(path), "--family", "qwen2")
    assert done.returncode == 0 and "toy model" in done.stdout
    from heta_core import Attributor

    assert Attributor.from_pretrained(str(path), device="cpu").model.config.model_type == "qwen2"
    again = heta_in_process(capsys, "toy-model", str(path))
    assert again.returncode == 2 and "not empty" in again.stderr
    bad = heta_in_process(capsys, "toy-model", str(tmp_path / "x"), "--family", "bert")
    assert bad.returncode == 2 and "--family must be one of" in bad.stderr and not (tmp_path / "x").exists()


def test_every_bench_option_explains_itself_and_its_default():
    import argparse

    from heta_core.cli import bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    options = [action for action in parser._actions if action.option_strings and action.dest != "help"]
    assert len(options) >= 15
    for action in options:
        assert action.help and "default" in action.help, action.option_strings
    shown = heta("bench", "--help").stdout
    assert "(default: 48)" in shown and "(default: gpt2)" in shown and "default: auto" in shown
