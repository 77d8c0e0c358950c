"""``heta-demo``: a tiny model trained on a task whose causal tokens are known.

``task`` generates the key–value retrieval task, ``train`` reproduces the shipped weights from a
seed, and :data:`DEMO_DIR` is where the package keeps them (``Attributor.from_pretrained("heta-demo")``).
"""

from pathlib import Path

DEMO_NAME = "heta-demo"
# meta.revision of results from the shipped weights; bump it whenever they change
DEMO_REVISION = "heta-demo-1"
DEMO_DIR = Path(__file__).resolve().parent / "heta-demo"
