"""heta_core — Hessian-Enhanced Token Attribution (HETA, ICLR 2026) for decoder-only LMs.

Public API: :class:`Attributor` (the façade), :class:`HetaConfig`, :class:`AttributionResult` (the
one result document, pydantic) and the errors. The method is specified in HETA.md (the project's
specification; see docs/engine.md). Layout:

- ``methods/``  the attribution methods: ``heta/`` (flow → M_T, hessian → S, kl → I, combine →
  Eq. 5, pipeline), ``baselines/``, and ``registry`` (the one list of methods)
- ``models/``   model plumbing: architecture ``adapters``, ``loading``, the ``handle``, toy models
- ``runtime/``  trace, the KV-prefix runner (prefix), packing, masking, cost, precision, progress
- ``inputs/``   documents, targets, granularity; ``results/`` the schema and its assembly
- ``evaluation/`` metrics, faithfulness, ``heta eval``, the heta-demo model; ``cli/`` the ``heta`` command
"""

from importlib import metadata as _metadata

from .attributor import Attributor
from .config import METHODS, PRESETS, HetaConfig, from_api_names
from .errors import (
    BudgetError,
    ConfigError,
    HetaError,
    InputError,
    ModelLoadError,
    NonFiniteResultError,
    UnsupportedArchitectureError,
)
from .inputs.request import AttributionRequest
from .methods.registry import METHOD_STAGES
from .models.adapters import SUPPORTED_MODEL_TYPES
from .models.placement import check_placement, check_quantize, parse_device_map
from .results.report import ASSETS as REPORT_ASSETS
from .results.report import method_details, render_report
from .results.schema import (
    SCHEMA_VERSION,
    AttributionResult,
    Estimate,
    ResultMeta,
    ResultWarning,
    Segment,
    TargetInfo,
    Timings,
    TokenInfo,
)
from .runtime.cost import Speed

try:
    __version__ = _metadata.version("heta")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "REPORT_ASSETS",
    "check_placement",
    "check_quantize",
    "from_api_names",
    "method_details",
    "parse_device_map",
    "render_report",
    "Attributor",
    "AttributionRequest",
    "AttributionResult",
    "BudgetError",
    "ConfigError",
    "Estimate",
    "HetaConfig",
    "HetaError",
    "InputError",
    "METHODS",
    "METHOD_STAGES",
    "ModelLoadError",
    "NonFiniteResultError",
    "PRESETS",
    "ResultMeta",
    "ResultWarning",
    "SCHEMA_VERSION",
    "SUPPORTED_MODEL_TYPES",
    "Segment",
    "Speed",
    "TargetInfo",
    "Timings",
    "TokenInfo",
    "UnsupportedArchitectureError",
    "__version__",
]
