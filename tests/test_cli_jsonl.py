"""``heta attribute --input prompts.jsonl --output results.jsonl`` run in a real terminal (a pty):
one record per line in input order, per-item errors that do not stop the run, a progress bar on
the terminal, and resuming (results kept, errors and a line cut short by a crash run again)."""

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from heta_core import Attributor, HetaConfig

from .helpers import ROOT, heta_in_process

LINES = [
    {"id": "gold", "text": "c=6 e=6 b=3 h=3 m=6 ? h", "target_text": " 3"},
    {"text": "a=2 d=5 g=2 k=9 ? k", "target_text": " 9", "config": {"samples": 2, "method": "gradient"}},
    {"text": "a=2 d=5 ? d", "target_position": 99},
    {"input_ids": [1, 2, 3], "text": "a=2 ? a"},
]


def in_terminal(args: list[str], columns: int = 100) -> tuple[int, str]:
    """Run ``heta`` with stdout and stderr on a pseudo-terminal; (exit status, what the terminal got)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, columns, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "COLUMNS": str(columns)}
    process = subprocess.Popen(
        [sys.executable, "-m", "heta_core.cli", *args], stdin=follower, stdout=follower, stderr=follower, env=env
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the last writer is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return process.wait(timeout=300), b"".join(chunks).decode("utf-8", "replace")


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_jsonl_file_is_attributed_with_a_progress_bar_and_per_item_errors(tmp_path):
    prompts, results = (
        write_jsonl(tmp_path / "prompts.jsonl", [*LINES[:2], "", "{not json", *LINES[2:]]),
        tmp_path / "results.jsonl",
    )
    status, screen = in_terminal(["attribute", "--input", str(prompts), "--output", str(results), "--samples", "3"])
    assert status == 1  # some items failed
    frames = screen.split("\r")
    assert any("attributing:" in f and "0/5" in f for f in frames) and any(
        "100%" in f and "5/5" in f for f in frames
    ), screen
    assert "failed=3" in screen and "2 attributed, 3 failed, 0 already in" in screen
    got = records(results)
    assert [(r["id"], r["line"]) for r in got] == [("gold", 1), (2, 2), (4, 4), (5, 5), (6, 6)]
    assert [r.get("error", {}).get("code") for r in got] == [
        None,
        None,
        "invalid_json",
        "target_out_of_range",
        "invalid_input",
    ]
    demo = Attributor.from_pretrained("heta-demo")
    alone = demo.attribute(LINES[0]["text"], target_text=" 3", config=HetaConfig(num_hvp_samples=3))
    # the same numbers as the Python API (up to thread-count reduction order: another process)
    assert [t["score"] for t in got[0]["result"]["tokens"]] == pytest.approx([t.score for t in alone.tokens], rel=1e-5)
    assert got[1]["result"]["method"] == "gradient" and got[1]["result"]["meta"]["config"] == {}


def test_a_rerun_resumes_keeping_results_and_retrying_the_rest(tmp_path, capsys):
    prompts, results = write_jsonl(tmp_path / "prompts.jsonl", LINES[:3]), tmp_path / "results.jsonl"
    status = heta_in_process(
        capsys, "attribute", "--input", str(prompts), "--output", str(results), "--samples", "2"
    ).returncode  # the first run
    first = records(results)
    assert status == 1 and [r["id"] for r in first] == ["gold", 2, 3] and "error" in first[2]
    # a crash while writing the second record: its line is cut short
    kept = results.read_text().splitlines()[0]
    results.write_text(kept + "\n" + json.dumps(first[1])[:40])
    write_jsonl(prompts, [*LINES[:2], {"text": "a=2 d=5 ? d", "target_text": " 5"}])  # the failed item, fixed
    status, screen = in_terminal(
        ["attribute", "--input", str(prompts), "--output", str(results), "--samples", "2"]
    )  # the rerun
    assert status == 0 and "2 attributed, 0 failed, 1 already in" in screen, screen
    again = records(results)
    assert [r["id"] for r in again] == ["gold", 2, 3] and all("result" in r for r in again)
    assert again[0] == first[0]  # kept as it was, not recomputed
    assert again[1]["result"]["tokens"] == first[1]["result"]["tokens"]  # the cut line ran again, same numbers


def test_bad_invocations_are_one_line(tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", [LINES[0], LINES[0]])
    cases = [
        (["--input", str(prompts), "--output", str(tmp_path / "r.jsonl")], "ids must be unique"),
        (["--input", str(prompts)], "--input and --output go together"),
        (
            ["--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "r.jsonl")],
            "cannot read --input file",
        ),
        (
            ["--input", str(write_jsonl(tmp_path / "blank.jsonl", ["", " "])), "--output", str(tmp_path / "r.jsonl")],
            "has no prompts",
        ),
    ]
    # the first as the shell sees it (nothing else on stderr), the rest through the same entry point here
    done = subprocess.run(
        [sys.executable, "-m", "heta_core.cli", "attribute", *cases[0][0]],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    answers = [(done.returncode, done.stderr)]
    for args, _ in cases[1:]:
        done = heta_in_process(capsys, "attribute", *args)
        answers.append((done.returncode, done.stderr))
    for (status, stderr), (_, message) in zip(answers, cases, strict=True):
        assert status == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, stderr
