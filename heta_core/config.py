"""``HetaConfig``: every knob of the engine, validated on construction.

An invalid value raises :class:`~heta_core.errors.ConfigError` (a ``ValueError``) whose message
names the field and the allowed values, so a caller (CLI, HTTP service) can show it verbatim.

A *preset* (``preset="fast" | "balanced" | "exact"``) is a bundle of the knobs that set HETA's
cost (:data:`PRESETS`, chosen by ``heta eval --suite --presets``: docs/evaluation.md "Presets"). A
knob given explicitly overrides its preset's value; the others take the preset's. The config
remembers which knobs were explicit, so ``replace(preset=...)`` re-applies a preset to the rest.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .methods.registry import METHOD_ALIASES, METHODS

MASKS = ("zero", "mean", "token:<id>")
FLOWS = ("heta", "official")
NORMALIZATIONS = ("none", "simplex")
STRATEGIES = ("fast", "reference")
# "model" computes in the model's own dtype. The others are upcasts only: we never downcast silently,
# because HVPs in a lower precision than the weights lose most of their significant digits.
DTYPES = ("model", "float32", "float64")
CURVATURES = ("exact", "ggn")

_TOKEN_MASK = re.compile(r"^token:(\d+)$")


class _PresetDefault:
    """The default of a preset knob: the preset's value (resolved in ``__post_init__``)."""

    def __repr__(self) -> str:
        return "<the preset's>"


_BY_PRESET: Any = _PresetDefault()

# the knobs a preset sets, with today's exact values; every preset is these with its changes
EXACT: dict[str, Any] = {
    "num_hvp_samples": 10,
    "curvature": "exact",
    "curvature_layers": None,
    "low_rank": None,
    "beta": 0.5,
}
# chosen with `heta eval --suite --presets` on both demo models (docs/evaluation.md "Presets"): balanced
# stays inside exact's hit@1 interval in every condition at ~0.4 of its cost; fast (flow and KL impact
# only) costs ~0.1 and loses where the answer is stored more than once (redundant)
PRESETS: dict[str, dict[str, Any]] = {
    "exact": {},
    "balanced": {"num_hvp_samples": 2},
    "fast": {"beta": 0.0},
}


@dataclass(frozen=True)
class HetaConfig:
    """Knobs of one HETA attribution (HETA.md names in brackets).

    preset              "exact" (default), "balanced" or "fast": a bundle of the cost knobs below
                        (:data:`PRESETS`); knobs given explicitly override it
    budget_s            a time budget in seconds (HETA only): the most exact preset whose estimated time
                        fits is run (never one more exact than ``preset``), and a run still going when
                        the budget is spent ends with the stages it has (a partial result);
                        None: no budget
    method              "heta" (default) or a baseline: "gradient", "input_x_gradient",
                        "integrated_gradients" ("ig"), "attention_rollout" ("rollout"), "occlusion"
                        ("loo"); short names are stored as the full name. Baselines use mask (the
                        removal / IG baseline vector), ig_steps, seed-free; the HETA knobs are ignored.
    ig_steps            Gauss–Legendre points for integrated_gradients' path integral
    beta, gamma         weights of S and I in Eq. 5 [β, γ]; a term of weight 0 is not computed
    num_hvp_samples     Rademacher probes per token for the S estimator [m]
    mask                how token i is removed for the KL term: "zero", "mean" or "token:<id>"
    flow                "heta" (this project's M_T) or "official" (the authors' released code)
    normalize           "simplex" (S and I each rescaled to sum 1 before Eq. 5; the default, chosen
                        by `heta eval --suite`, docs/evaluation.md) or "none" (the paper's Eq. 5)
    seed                seeds the probes; the only source of randomness
    strategy            "fast" (batched, chunked, KV-prefix reuse) or "reference" (literal loops)
    memory_budget_mb    upper bound for the activations of one batched chunk (fast path); None =
                        auto: 512 MB on CPU (small chunks stay in cache), half the free memory on CUDA
    dtype               "model" (default: the model's own dtype) or an upcast: "float32", "float64"
    cuda_streams        CUDA streams used for independent chunks and stages (ignored on CPU)
    cuda_graphs         the Hessian stage's chunks padded to bucketed shapes and, on CUDA, each replayed
                        from a captured CUDA graph (:mod:`heta_core.runtime.graphs`): one launch per
                        chunk instead of thousands of kernels, for more arithmetic (full rows, padding).
                        On a CPU the padded chunks run eagerly (same numbers). Ignored by the reference
                        strategy and by ``low_rank``

    Long-context approximations (HETA.md; each is opt-in and documented with its cost in docs/engine.md):
    curvature_layers    S w.r.t. the residual stream entering the last k blocks (None: w.r.t. X)
    low_rank            S from a randomized rank-k approximation of the whole Hessian (None: exact blocks)
    curvature           "exact" Hessian or "ggn" (Gauss–Newton surrogate, PSD)
    window, overlap     the authors' windowing: windows of W context tokens, consecutive windows
                        sharing a fraction ρ of their tokens (None: no windowing)

    diagnostics         also measure how faithful the attribution is: the target's probability with
                        the top-k tokens removed / only kept, k = 1, 3, 5 and 10 % (result.diagnostics;
                        one full-length forward plus up to 8 masked ones per attribution row)
    """

    method: str = "heta"
    ig_steps: int = 32
    beta: float = _BY_PRESET
    gamma: float = 0.5
    num_hvp_samples: int = _BY_PRESET
    mask: str = "zero"
    flow: str = "heta"
    normalize: str = "simplex"
    seed: int = 0
    strategy: str = "fast"
    memory_budget_mb: int | None = None
    dtype: str = "model"
    cuda_streams: int = 2
    cuda_graphs: bool = False
    curvature_layers: int | None = _BY_PRESET
    low_rank: int | None = _BY_PRESET
    curvature: str = _BY_PRESET
    window: int | None = None
    overlap: float = 0.0
    diagnostics: bool = False
    preset: str = "exact"
    budget_s: float | None = None

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"preset must be one of {', '.join(PRESETS)}; got {self.preset!r}", field="preset")
        explicit = frozenset(name for name in EXACT if getattr(self, name) is not _BY_PRESET)
        bundle = {**EXACT, **PRESETS[self.preset]}
        for name in EXACT:
            if name not in explicit:
                object.__setattr__(self, name, bundle[name])
        object.__setattr__(self, "_explicit", explicit)
        if isinstance(self.method, str) and self.method in METHOD_ALIASES:
            object.__setattr__(self, "method", METHOD_ALIASES[self.method])
        if self.method not in METHODS:
            allowed = ", ".join(METHODS) + " (short: " + ", ".join(f"{a}={m}" for a, m in METHOD_ALIASES.items()) + ")"
            raise ConfigError(f"method must be one of {allowed}; got {self.method!r}", field="method")
        _check_int(self, "ig_steps", 1)
        for name in ("beta", "gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}", field=name)
        _check_int(self, "num_hvp_samples", 1)
        _check_int(self, "seed", 0)
        if self.memory_budget_mb is not None:
            _check_int(self, "memory_budget_mb", 16)
        _check_int(self, "cuda_streams", 1)
        if not isinstance(self.mask, str) or (self.mask not in ("zero", "mean") and not _TOKEN_MASK.match(self.mask)):
            raise ConfigError(f"mask must be one of {', '.join(MASKS)}; got {self.mask!r}", field="mask")
        _check_choice(self, "flow", FLOWS)
        _check_choice(self, "normalize", NORMALIZATIONS)
        _check_choice(self, "strategy", STRATEGIES)
        _check_choice(self, "dtype", DTYPES)
        _check_choice(self, "curvature", CURVATURES)
        for name, minimum in (("curvature_layers", 1), ("low_rank", 1), ("window", 2)):
            if getattr(self, name) is not None:
                _check_int(self, name, minimum)
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, (int, float)) or not 0 <= self.overlap < 1:
            raise ConfigError(f"overlap must be a number in [0, 1), got {self.overlap!r}", field="overlap")
        if not isinstance(self.cuda_graphs, bool):
            raise ConfigError(f"cuda_graphs must be true or false, got {self.cuda_graphs!r}", field="cuda_graphs")
        if not isinstance(self.diagnostics, bool):
            raise ConfigError(f"diagnostics must be true or false, got {self.diagnostics!r}", field="diagnostics")
        if self.method != "heta" and self.window is not None:
            raise ConfigError(f"window applies to method 'heta' only, not {self.method!r}", field="window")
        if self.budget_s is not None:
            value = self.budget_s
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"budget_s must be a finite number of seconds > 0, got {value!r}", field="budget_s")
            if self.method != "heta":
                raise ConfigError(
                    f"budget_s applies to method 'heta' only: {self.method!r} has no stages to drop", field="budget_s"
                )

    @property
    def mask_token_id(self) -> int | None:
        """The token id of a ``token:<id>`` mask, else None."""
        match = _TOKEN_MASK.match(self.mask)
        return int(match.group(1)) if match else None

    @property
    def explicit(self) -> frozenset[str]:
        """The preset knobs given explicitly (the others came from the preset)."""
        return self._explicit  # type: ignore[attr-defined]

    def replace(self, **changes: Any) -> HetaConfig:
        """A copy with some fields changed (validated like a new config). Preset knobs that came from
        the preset follow the copy's preset; explicit ones stay."""
        kept = {name: value for name, value in self.to_dict().items() if name not in EXACT or name in self.explicit}
        return HetaConfig.from_dict({**kept, **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HetaConfig:
        """Build from a mapping; unknown keys are an error, not silently ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown config field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}",
                field=unknown[0],
            )
        return cls(**values)


# the HTTP API's (and JSONL files') config names that differ from HetaConfig's (docs/python.md: one option, three
# spellings)
API_NAMES = {"samples": "num_hvp_samples"}


def from_api_names(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the API's config names turned into HetaConfig's."""
    return {API_NAMES.get(name, name): value for name, value in values.items()}


def _check_int(config: HetaConfig, name: str, minimum: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}", field=name)


def _check_choice(config: HetaConfig, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(config, name)
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}", field=name)
