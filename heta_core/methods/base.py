"""What every attribution method gives the façade: a run and a plan over the same request.

``run(handle, request, config, progress) → Parts`` scores the request; ``plan(handle, request,
config, budget) → Plan`` predicts its work from the same chunk planner, without running the model
(the cost ceiling, progress totals and ``Attributor.estimate`` read it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Parts:
    """A method's output over the n prompt tokens, ready for assembly.

    ``values``: "score" and, for HETA, its components "flow", "hessian", "kl" — float64 CPU, ``[n]``
    (one target or a "sum" span) or ``[k, n]`` ("each"); the result document reports them in float32.
    ``logprobs``: log P(y_j | prompt, y_<j) per target token. ``hvps``: Hessian-vector products used (None
    for a method without any).
    ``timings``: seconds per stage of the method. ``foil_logprob``: log P(foil | prompt) when the
    request has a foil. ``stages``: the method's stages whose terms ``values`` hold. ``complete``:
    every stage the config asks for is done (false for a partial result). ``stopped``: why a run
    ended before its last stage ("budget": its time budget ran out), else None.
    """

    values: dict[str, torch.Tensor]
    logprobs: list[float]
    hvps: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    foil_logprob: float | None = None
    stages: tuple[str, ...] = ()
    complete: bool = True
    stopped: str | None = None


def foil_logprob(logprobs: torch.Tensor, foil: int | None) -> float | None:
    """log P(foil) at the first predicting position from the trace's ``[k, V]`` log-probabilities."""
    return None if foil is None else float(logprobs[0, foil])


@dataclass(frozen=True)
class Plan:
    """Predicted work of one run: HVPs, token positions pushed through the model, batched chunks
    (the progress ticks), peak activation bytes (trace + the largest chunk) and per stage the
    (units, chunks) the time model prices (:mod:`heta_core.runtime.cost`)."""

    hvps: int
    forward_tokens: int
    chunks: int
    peak_bytes: int
    work: dict[str, tuple[int, int]] = field(default_factory=dict)
