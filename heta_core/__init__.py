"""heta_core — Hessian-Enhanced Token Attribution (HETA, ICLR 2026) for decoder-only LMs.

Public API: :class:`HetaConfig`, :class:`Attributor`, :class:`AttributionResult` and the errors.
The method is specified in HETA.md (the project's specification; see docs/engine.md); the modules mirror it: ``flow`` (M_T), ``hessian``
(S_i), ``kl`` (I_i), ``combine`` (Eq. 5); ``adapters`` holds every architecture difference.
"""

from .adapters import SUPPORTED_MODEL_TYPES
from .attributor import Attributor
from .config import METHODS, HetaConfig
from .errors import ConfigError, HetaError, InputError, ModelLoadError, UnsupportedArchitectureError
from .result import AttributionResult, Estimate, TargetInfo, TokenInfo

__all__ = [
    "Attributor",
    "AttributionResult",
    "ConfigError",
    "Estimate",
    "HetaConfig",
    "HetaError",
    "InputError",
    "METHODS",
    "ModelLoadError",
    "SUPPORTED_MODEL_TYPES",
    "TargetInfo",
    "TokenInfo",
    "UnsupportedArchitectureError",
]
