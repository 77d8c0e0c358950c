"""The attribution methods: one entry each, the only list of them.

``METHODS`` (names), ``METHOD_ALIASES``, the CLI help, ``GET /models``, the result's
``meta.config`` and the metric stages all derive from this table. Adding a method = a module under
``methods/`` with ``run`` and ``plan`` (:mod:`heta_core.methods.base`) and an entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .baselines import pipeline as baselines
from .heta import pipeline as heta

# HetaConfig fields that change HETA's numbers (memory_budget_mb, cuda_streams and dtype only
# change how it runs; the result's meta reports the dtype it ran in)
HETA_FIELDS = (
    "preset",
    "beta",
    "gamma",
    "num_hvp_samples",
    "mask",
    "flow",
    "normalize",
    "seed",
    "strategy",
    "curvature",
    "curvature_layers",
    "low_rank",
    "window",
    "overlap",
)


@dataclass(frozen=True)
class Method:
    name: str
    aliases: tuple[str, ...]
    summary: str
    run: Callable  # (handle, request, config, progress, publish=None) -> Parts; publish(stages, Parts) for each partial
    plan: Callable  # (handle, request, config, budget bytes) -> Plan
    fields: tuple[str, ...]  # the HetaConfig fields its result depends on
    signed: bool  # scores can be negative
    stages: tuple[str, ...] = ("baseline",)  # the keys of Parts.timings
    # (handle, [(request, config, progress, publish)], packing, finished(index, outcome)) -> [Parts | exception]:
    # several requests whose batched chunks share passes; None: the method runs its requests one by one
    run_many: Callable | None = None
    objective: bool = True  # explains an objective (so it has a contrastive form with a foil)

    @property
    def short(self) -> str:
        """The name a table column prints: a name longer than "occlusion" by its first alias."""
        return self.aliases[0] if self.aliases and len(self.name) > len("occlusion") else self.name


def _row(method: baselines.RowMethod) -> dict:
    return {"run": method.run, "plan": method.plan}


_TABLE = (
    Method(
        "heta",
        (),
        "Hessian-Enhanced Token Attribution: M_T · (β·S + γ·I)",
        heta.run,
        heta.plan,
        HETA_FIELDS,
        False,
        heta.STAGES,
        heta.run_many,
    ),
    Method("gradient", (), "‖∂g/∂x_i‖₂ (saliency)", **_row(baselines.GRADIENT), fields=(), signed=False),
    Method("input_x_gradient", ("ixg",), "x_i · ∂g/∂x_i", **_row(baselines.INPUT_X_GRADIENT), fields=(), signed=True),
    Method(
        "integrated_gradients",
        ("ig",),
        "path integral of gradients from the masked input",
        **_row(baselines.INTEGRATED_GRADIENTS),
        fields=("ig_steps", "mask"),
        signed=True,
    ),
    Method(
        "attention_rollout",
        ("rollout",),
        "Abnar & Zuidema's attention rollout",
        **_row(baselines.ATTENTION_ROLLOUT),
        fields=(),
        signed=False,
        objective=False,
    ),
    Method(
        "occlusion",
        ("loo",),
        "leave-one-out drop of log P(target)",
        baselines.run_occlusion,
        baselines.plan_occlusion,
        ("mask",),
        True,
    ),
)

REGISTRY: dict[str, Method] = {method.name: method for method in _TABLE}
METHODS: tuple[str, ...] = tuple(REGISTRY)
METHOD_ALIASES: dict[str, str] = {alias: method.name for method in _TABLE for alias in method.aliases}
# each method's stages: the keys of its result's meta.timings besides the totals (metrics label compute seconds by them)
METHOD_STAGES: dict[str, tuple[str, ...]] = {method.name: method.stages for method in _TABLE}


def method(name: str) -> Method:
    """The entry of a canonical method name (``HetaConfig`` has already resolved aliases)."""
    return REGISTRY[name]
