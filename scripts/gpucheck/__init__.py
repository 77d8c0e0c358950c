"""scripts/gpu-check's modules: what the steps run (plan), installing what the interpreter lacks
(install), the steps (steps, serving) and the summary (report). Only the standard library at import
time: the entry script imports them before the project and its requirements are installed."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu-check"  # rerun by itself in the environment it installs into
