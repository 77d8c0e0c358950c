"""What many tests share, defined once: the repository's root, the `heta` command, the environment
variables the settings read, waiting for jobs to end, counting a service's jobs, and reading the
process tree from /proc."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from heta_service import store
from heta_service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def heta_in_process(capsys, *args: str) -> subprocess.CompletedProcess:
    """``heta ARGS`` through the same entry point in this process (``python -m heta_core.cli`` is
    ``sys.exit(main())``): for refusals and short runs, whose process start-up would cost seconds each
    (torch and transformers imported); a real process shows once (test_cli.py's
    test_a_refusal_in_a_real_process_is_its_one_line_only) that nothing else reaches its stderr."""
    from heta_core.cli import main

    capsys.readouterr()
    try:
        status = main(list(args))
    except SystemExit as stop:  # as the interpreter ends a process: a message goes to stderr with status 1
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
        status = 1 if isinstance(stop.code, str) else (stop.code or 0)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(["heta", *args], status, captured.out, captured.err)


def heta_command(*args: str) -> list[str]:
    """The installed `heta` script (what users run), or the module where it is not installed."""
    script = Path(sys.executable).parent / "heta"
    return [sys.executable, str(script), *args] if script.exists() else [sys.executable, "-m", "heta_core.cli", *args]


def heta(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """``heta ARGS`` in a process of its own, offline, from this checkout; ``env`` adds variables."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run(heta_command(*args), capture_output=True, text=True, timeout=timeout, env=environment)


def settings_variables() -> set[str]:
    """Every environment variable the service's settings read (the deployment files may set no other)."""
    names = set()
    for name, field in Settings.model_fields.items():
        if isinstance(field.validation_alias, str):  # a standard name of its own (OTEL_*)
            names.add(field.validation_alias)
            continue
        aliases = getattr(field.validation_alias, "choices", None)
        names |= {str(a) for a in aliases} if aliases else {f"HETA_{name.upper()}"}
    return names


def settle(server, ids, timeout: float = 180, failing_over: bool = False) -> dict[str, dict]:
    """Waits until every job in ``ids`` is final; their views by id. ``failing_over``: a 503 (Redis
    failing over) is a moment to wait through, not a failure."""
    deadline, finished = time.monotonic() + timeout, {}
    while len(finished) < len(ids):
        assert time.monotonic() < deadline, f"jobs still open: {set(ids) - set(finished)}"
        for job_id in set(ids) - set(finished):
            answer = server.http.get(f"/jobs/{job_id}")
            if failing_over and answer.status_code == 503:
                continue
            assert answer.status_code == 200, answer.text
            if answer.json()["status"] in store.FINAL:
                finished[job_id] = answer.json()
        time.sleep(0.2)
    return finished


def job_count(redis) -> int:
    """Jobs the service's Redis holds (any status)."""
    return sum(1 for _ in redis.scan_iter(store.job_key("*")))


def parents() -> dict[int, int]:
    """pid → parent pid of every process on the machine."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                found[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    return found


def children(pid: int) -> list[int]:
    return [child for child, parent in parents().items() if parent == pid]


def cmdline(pid: int) -> bytes:
    with contextlib.suppress(OSError):
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()
    return b""


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its parent)."""
    with contextlib.suppress(OSError, IndexError):
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def is_worker(pid: int) -> bool:
    command = cmdline(pid)
    return b"heta\x00worker" in command or b"heta worker" in command


def worker_pids(root: int) -> list[int]:
    """The `heta worker` processes descended from ``root`` (a process a test started): never a
    worker of anyone else's `heta serve` on the same machine."""
    tree: dict[int, list[int]] = {}
    for pid, parent in parents().items():
        tree.setdefault(parent, []).append(pid)
    found, stack = [], [root]
    while stack:
        for child in tree.get(stack.pop(), []):
            stack.append(child)
            if is_worker(child) and alive(child):
                found.append(child)
    return sorted(found)
