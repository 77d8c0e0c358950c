"""The habits CI keeps: the type checker passes on heta_core's public API (the modules pyproject's
[tool.mypy] names), and the pre-commit hooks run the same tools CI does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from .helpers import ROOT

BIN = Path(sys.executable).parent


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)


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
