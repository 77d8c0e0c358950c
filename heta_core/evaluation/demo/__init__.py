"""The builtin demo models: tiny models trained on tasks whose causal tokens are known.

``heta-demo`` answers key–value lookups with one attention hop (:mod:`.task`); ``heta-demo-hard``
needs several (two-hop pointers, overrides, decoys, sums; :mod:`.hard_task`). ``train`` reproduces
the shipped weights from a seed; :data:`BUILTINS` maps each name to the package folder holding them
and the ``meta.revision`` of results computed with them (``Attributor.from_pretrained(name)``).
"""

from pathlib import Path

_HERE = Path(__file__).resolve().parent
DEMO_NAME = "heta-demo"
# meta.revision of results from the shipped weights; bump it whenever they change
DEMO_REVISION = "heta-demo-1"
DEMO_DIR = _HERE / DEMO_NAME
HARD_NAME = "heta-demo-hard"
HARD_REVISION = "heta-demo-hard-1"
HARD_DIR = _HERE / HARD_NAME
BUILTINS: dict[str, tuple[Path, str]] = {DEMO_NAME: (DEMO_DIR, DEMO_REVISION), HARD_NAME: (HARD_DIR, HARD_REVISION)}
