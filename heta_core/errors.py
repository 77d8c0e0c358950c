"""Errors raised by the engine.

Every error a caller can cause carries a stable ``code`` so that the HTTP service and the CLI can map
it to a status / exit line without parsing messages. They subclass ``ValueError`` because each one
is a bad value supplied by the caller (a config field, an input, a model name).
"""

from __future__ import annotations


class HetaError(ValueError):
    """Base class: a request the engine refuses, with a stable machine-readable ``code``."""

    code = "heta_error"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None, details: dict | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.field = field
        self.details = details or {}  # more machine-readable context (the HTTP problem carries it)


class ConfigError(HetaError):
    """An invalid ``HetaConfig`` value; ``field`` names the offending field."""

    code = "invalid_config"


class InputError(HetaError):
    """Unusable input: empty or too-short text, target position out of range, ..."""

    code = "invalid_input"


class UnsupportedArchitectureError(HetaError):
    """The model's architecture has no adapter; the message lists the supported ones."""

    code = "unsupported_architecture"


class ModelLoadError(HetaError):
    """The model could not be found or loaded under the safety rules (safetensors, no remote code)."""

    code = "model_not_found"


class NonFiniteResultError(HetaError):
    """The scores overflowed or are undefined (e.g. a huge beta/gamma): refused rather than
    returned as a result whose every score is null."""

    code = "non_finite_result"


class BudgetError(ConfigError):
    """Not even HETA's first stage fits ``budget_s``; ``details["estimate"]`` is the cheapest plan's estimate."""

    code = "cost_over_ceiling"
