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
    assert "scripts/gpucheck/steps.py" in listed


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


def _imports(package: str, folder: Path) -> dict[str, set[str]]:
    """Module → the modules of ``package`` it imports at module level (function-level imports excluded)."""
    import ast

    graph: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        parts = path.relative_to(folder).with_suffix("").parts
        name = ".".join((package, *parts)).removesuffix(".__init__")
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom):
                base = here
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = (base + ("." + node.module if node.module else "")) if node.level else (node.module or "")
                if target.startswith(package):
                    found.add(target)
                    found.update(f"{target}.{alias.name}" for alias in node.names)
        graph[name] = found
    return {module: {t for t in targets if t in graph and t != module} for module, targets in graph.items()}


def test_the_service_uses_only_heta_cores_public_api():
    import heta_core

    for path in (ROOT / "service").rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            assert not stripped.startswith(("from heta_core.", "import heta_core.")), f"{path.name}: {stripped}"
            if stripped.startswith("from heta_core import"):
                names = stripped.removeprefix("from heta_core import").replace("(", "").replace(")", "")
                for name in filter(None, (n.strip().split(" as ")[0] for n in names.split(","))):
                    assert name in heta_core.__all__, f"{path.name}: heta_core.{name} is not public"


def test_no_import_circle_in_the_service():
    graph = _imports("heta_service", ROOT / "service")

    # packages import their own modules to re-export them: a package and its children are one node
    def node(module: str) -> str:
        return module if module.count(".") < 2 or module.startswith("heta_service.routes") else module.rsplit(".", 1)[0]

    edges = {node(m): set() for m in graph}
    for module, targets in graph.items():
        edges[node(module)].update(node(t) for t in targets if node(t) != node(module))
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in edges.get(module, ()):
            assert state.get(target) != 1, " -> ".join([*path, module, target])
            if target not in state:
                visit(target, [*path, module])
        state[module] = 2

    for module in edges:
        if module not in state:
            visit(module, [])
    assert len(edges) > 20  # the graph holds the service's modules


# generated, not written: openapi-typescript's types of /openapi.json and esbuild's bundle of clients/typescript
GENERATED = {"clients/typescript/src/schema.d.ts", "heta_core/results/assets/heta-attribution.js"}
SOURCE = re.compile(r"\.(py|ts|js|sh|lua)$|^scripts/[^/.]+$|^\.ci/run$")


def test_no_source_file_over_400_lines():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    sources = [name for name in tracked if SOURCE.search(name) and name not in GENERATED]
    assert len(sources) > 150 and "heta_core/attributor.py" in sources and "scripts/gpu-check" in sources
    long = {name: n for name in sources if (n := len((ROOT / name).read_text().splitlines())) > 400}
    assert not long, long
    assert GENERATED <= set(tracked)
