"""transformers' names that move between 5.x releases, in one place.

5.24 renamed the KV-cache argument and output field ``past_key_values`` to ``cache`` (the old name
warns, and goes in 5.40). The engine asks the model which name its ``forward`` takes, so it runs
unchanged on the pinned release and on the newest 5.x (``scripts/test`` runs the engine tests
against both).
"""

from __future__ import annotations

import inspect
from functools import cache

import torch


@cache
def _cache_argument(forward_class: type) -> str:
    parameters = inspect.signature(forward_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def with_cache(model: torch.nn.Module, cache) -> dict:
    """The keyword argument passing ``cache`` to ``model``'s forward, under the name it takes."""
    return {_cache_argument(type(model)): cache}


def cache_of(output):
    """The KV cache a forward returned (``output.cache`` from 5.24, ``past_key_values`` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values
