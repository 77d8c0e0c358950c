"""The habits CI keeps: ruff's linter finds nothing and its formatter would change nothing (pyproject's
[tool.ruff]), the type checker passes on heta_core's public API (the modules [tool.mypy] names), and the
pre-commit hooks run the same tools CI does."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from .helpers import ROOT

BIN = Path(sys.executable).parent


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_ruff_finds_nothing():
    done = run(str(BIN / "ruff"), "check", ".")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "All checks passed!" in done.stdout
    # the scripts without a .py suffix are checked too (pyproject's extend-include)
    listed = run(str(BIN / "ruff"), "check", "--show-files", ".").stdout
    assert "scripts/gpu-check" in listed and "scripts/settings-table" in listed


def test_the_code_is_formatted():
    done = run(str(BIN / "ruff"), "format", "--check", ".")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    checked = int(re.search(r"(\d+) files? already formatted", done.stdout).group(1))
    assert checked >= 150, done.stdout  # heta_core, service, tests and the scripts, not a few files


def test_the_public_api_type_checks():
    done = run(str(BIN / "mypy"))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Success: no issues found in" in done.stdout


def test_pre_commit_runs_the_tools_ci_runs():
    hooks = {
        hook["id"]: hook
        for repo in yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"]
        for hook in repo["hooks"]
    }
    assert {"ruff-check", "ruff-format", "mypy"} <= set(hooks)
    assert all(hook["entry"].startswith(".venv/bin/") for hook in hooks.values())  # offline: the venv's versions
