"""The baseline methods' run and plan: one traced forward, then the method's passes.

``rows`` are (sequence length, targets): one row for a single target or a "sum" span, one per
target token in "each" mode (an independent attribution of y_j from the prompt and y_<j).
Occlusion scores every target at once from the masked forwards of HETA's KL stage. With a foil
(``request.foil``) every method explains log p(target) − log p(foil) instead; attention rollout,
which explains no objective, is refused before the run (:mod:`heta_core.inputs.foil`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ...models.adapters import eager_attention
from ...runtime.cost import budget_bytes, row_bytes_fn, trace_bytes
from ...runtime.masking import mask_vector, masked_work
from ...runtime.prefix import StreamPool, SuffixRunner
from ...runtime.trace import run_trace
from ..base import Parts, Plan, foil_logprob
from .gradients import gradient, input_x_gradient, integrated_gradients
from .occlusion import occlusion
from .rollout import attention_rollout


def _rows(request, targets: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    n, ids = request.scored, request.doc.ids
    if request.mode != "each":
        return [(len(ids) - 1, targets)]
    return [(n + j, targets[j : j + 1]) for j in range(request.targets)]


def _traced(handle, request, cfg, keep_cache: bool):
    """What every baseline starts from: the prompt's embeddings, targets, mask fill and one traced forward."""
    ids, n, model = request.doc.ids, request.scored, handle.model
    embeds = handle.embed(ids[:-1])
    targets = torch.tensor(ids[n:], device=handle.device)
    fill = mask_vector(embeds[:n], cfg.mask, model.get_input_embeddings())
    with eager_attention(model):
        trace = run_trace(
            model, handle.adapter, handle.layout, embeds, predicting=request.targets, keep_cache=keep_cache
        )
    return embeds, targets, fill, trace


def _parts(request, trace, scores: torch.Tensor, seconds: float) -> Parts:
    """One stage ("baseline"): nothing to publish before the end."""
    ids, n = request.doc.ids, request.scored
    logprobs = [float(trace.logprobs[j, ids[n + j]]) for j in range(request.targets)]
    score = scores.double() if request.mode == "each" else scores.double()[0]
    return Parts(
        {"score": score},
        logprobs,
        None,
        {"baseline": seconds},
        foil_logprob(trace.logprobs, request.foil),
        stages=("baseline",),
    )


@dataclass(frozen=True)
class RowMethod:
    """A baseline that scores each (length, targets) row with one ``function(model, embeds, n, targets,
    **context) -> [n]``; ``passes(cfg)``: its forward-and-backward passes per row (1; IG's steps, which
    it chunks and ticks itself; rollout's 0: it reads the trace's attentions)."""

    function: Callable[..., torch.Tensor]
    passes: Callable[[Any], int] = lambda cfg: 1
    ticks_itself: bool = False

    def scores(self, model, embeds: torch.Tensor, n: int, rows, *, tick=lambda: None, **context) -> torch.Tensor:
        """Scores ``[len(rows), n]`` for each (length, targets) row. ``tick()`` runs on the host before every
        batched chunk (once per row for the one-pass methods); an exception it raises aborts the run."""
        scores = []
        for length, targets in rows:
            if not self.ticks_itself:
                tick()
            scores.append(self.function(model, embeds[:length], n, targets, tick=tick, **context).detach().cpu())
        return torch.stack(scores)

    def run(self, handle, request, cfg, progress, publish=None) -> Parts:
        model, n = handle.model, request.scored
        clock = time.perf_counter()
        embeds, targets, fill, trace = _traced(handle, request, cfg, keep_cache=False)
        scores = self.scores(
            model,
            embeds,
            n,
            _rows(request, targets),
            fill=fill,
            steps=cfg.ig_steps,
            mean_attentions=trace.mean_attentions,
            foil=request.foil,
            row_bytes=row_bytes_fn(model.config, handle.layout, embeds.dtype, probes=1),
            budget=budget_bytes(cfg.memory_budget_mb, handle.device),
            tick=progress.tick,
        )
        return _parts(request, trace, scores, time.perf_counter() - clock)

    def plan(self, handle, request, cfg, budget: int) -> Plan:
        """Mirrors :meth:`run`: one trace forward, then the method's passes per row."""
        model_config, layout, dtype = handle.config, handle.layout, handle.dtype
        n, k = request.scored, request.targets
        fed = n + k - 1
        trace = trace_bytes(model_config, layout, dtype, fed, k, False)
        row = row_bytes_fn(model_config, layout, dtype, probes=1)
        lengths = [fed] if request.mode != "each" else [n + j for j in range(k)]
        tokens, chunks, peak, passes = fed, 0, 0, self.passes(cfg)
        for length in lengths:
            per_chunk = max(1, budget // max(1, row(length)))
            tokens += passes * length
            chunks += max(1, -(-passes // per_chunk))  # the progress ticks of scores()
            peak = max(peak, min(passes, per_chunk) * row(length))
        # a gradient row is a forward and a backward: two units per position
        return Plan(0, tokens, chunks, trace + peak, {"baseline": (fed + 2 * (tokens - fed), chunks + 1)})


def run_occlusion(handle, request, cfg, progress, publish=None) -> Parts:
    """Occlusion scores every target at once from the masked forwards of HETA's KL stage."""
    model, n = handle.model, request.scored
    clock = time.perf_counter()
    embeds, targets, fill, trace = _traced(handle, request, cfg, keep_cache=True)
    drops = occlusion(
        SuffixRunner(model, trace.kv),
        embeds,
        n,
        targets,
        fill=fill,
        base_logprobs=trace.logprobs,
        row_bytes=row_bytes_fn(model.config, handle.layout, embeds.dtype),
        budget=budget_bytes(cfg.memory_budget_mb, handle.device),
        streams=StreamPool(handle.device, cfg.cuda_streams, progress.tick),
        foil=request.foil,
    ).cpu()
    # "each": row j is y_j's drop; otherwise g = Σ_j log P(y_j), so the drops add up
    scores = drops.T if request.mode == "each" else drops.sum(1)[None]
    return _parts(request, trace, scores, time.perf_counter() - clock)


def plan_occlusion(handle, request, cfg, budget: int) -> Plan:
    """Mirrors :func:`run_occlusion`: one trace forward, then the KL stage's masked forwards."""
    model_config, layout, dtype = handle.config, handle.layout, handle.dtype
    fed = request.scored + request.targets - 1
    trace = trace_bytes(model_config, layout, dtype, fed, request.targets, False)
    tokens, chunks, peak = masked_work(request.scored, fed, row_bytes_fn(model_config, layout, dtype), budget)
    return Plan(0, fed + tokens, chunks, trace + peak, {"baseline": (fed + tokens, chunks + 1)})


GRADIENT = RowMethod(gradient)
INPUT_X_GRADIENT = RowMethod(input_x_gradient)
INTEGRATED_GRADIENTS = RowMethod(integrated_gradients, passes=lambda cfg: cfg.ig_steps, ticks_itself=True)
ATTENTION_ROLLOUT = RowMethod(attention_rollout, passes=lambda cfg: 0)
