"""The baseline methods' run and plan: one traced forward, then the method's passes.

``rows`` are (sequence length, targets): one row for a single target or a "sum" span, one per
target token in "each" mode (an independent attribution of y_j from the prompt and y_<j).
Occlusion scores every target at once from the masked forwards of HETA's KL stage. With a foil
(``request.foil``) every method explains log p(target) − log p(foil) instead; attention rollout,
which explains no objective, is refused before the run (:mod:`heta_core.inputs.foil`).
"""

from __future__ import annotations

import time

import torch

from ...models.adapters import eager_attention
from ...runtime.batching import StreamPool, SuffixRunner
from ...runtime.cost import budget_bytes, row_bytes_fn, trace_bytes
from ...runtime.masking import mask_vector, masked_work
from ...runtime.trace import run_trace
from ..base import Parts, Plan, foil_logprob
from .gradients import gradient, input_x_gradient, integrated_gradients
from .occlusion import occlusion
from .rollout import attention_rollout

# the per-row methods; occlusion is planned and run on its own below
ROW_FUNCTIONS = {
    "gradient": gradient,
    "input_x_gradient": input_x_gradient,
    "integrated_gradients": integrated_gradients,
    "attention_rollout": attention_rollout,
}


def _rows(request, targets: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    n, ids = request.scored, request.doc.ids
    if request.mode != "each":
        return [(len(ids) - 1, targets)]
    return [(n + j, targets[j : j + 1]) for j in range(request.targets)]


def baseline_scores(method: str, model, embeds: torch.Tensor, n: int, rows, *, tick=lambda: None, **context) -> torch.Tensor:
    """Scores ``[len(rows), n]`` of a per-row baseline ``method`` for each (length, targets) row.

    ``tick()`` runs on the host before every batched chunk (once per row for the one-pass methods);
    an exception it raises aborts the computation (cancellation, deadlines).
    """
    function = ROW_FUNCTIONS[method]
    scores = []
    for length, targets in rows:
        if method != "integrated_gradients":
            tick()
        scores.append(function(model, embeds[:length], n, targets, tick=tick, **context).detach().cpu())
    return torch.stack(scores)


def run(handle, request, cfg, progress, publish=None) -> Parts:
    """One stage ("baseline"): nothing to publish before the end."""
    ids, n, model = request.doc.ids, request.scored, handle.model
    embeds = handle.embed(ids[:-1])
    targets = torch.tensor(ids[n:], device=handle.device)
    fill = mask_vector(embeds[:n], cfg.mask, model.get_input_embeddings())
    budget = budget_bytes(cfg.memory_budget_mb, handle.device)
    clock = time.perf_counter()
    occluding = cfg.method == "occlusion"
    with eager_attention(model):
        trace = run_trace(model, handle.adapter, handle.layout, embeds, predicting=request.targets, keep_cache=occluding)
    if occluding:
        drops = occlusion(
            SuffixRunner(model, trace.kv), embeds, n, targets, fill=fill, base_logprobs=trace.logprobs,
            row_bytes=row_bytes_fn(model.config, handle.layout, embeds.dtype), budget=budget,
            streams=StreamPool(handle.device, cfg.cuda_streams, progress.tick), foil=request.foil,
        ).cpu()  # fmt: skip
        # "each": row j is y_j's drop; otherwise g = Σ_j log P(y_j), so the drops add up
        scores = drops.T if request.mode == "each" else drops.sum(1)[None]
    else:
        scores = baseline_scores(
            cfg.method, model, embeds, n, _rows(request, targets),
            fill=fill, steps=cfg.ig_steps, mean_attentions=trace.mean_attentions, foil=request.foil,
            row_bytes=row_bytes_fn(model.config, handle.layout, embeds.dtype, probes=1), budget=budget, tick=progress.tick,
        )  # fmt: skip
    seconds = time.perf_counter() - clock
    logprobs = [float(trace.logprobs[j, ids[n + j]]) for j in range(request.targets)]
    score = scores.double() if request.mode == "each" else scores.double()[0]
    return Parts({"score": score}, logprobs, None, {"baseline": seconds}, foil_logprob(trace.logprobs, request.foil),
                 stages=("baseline",))  # fmt: skip


def plan(handle, request, cfg, budget: int) -> Plan:
    """Mirrors :func:`run`: one trace forward, then the method's passes."""
    model_config, layout, dtype = handle.config, handle.layout, handle.dtype
    n, k = request.scored, request.targets
    fed = n + k - 1
    trace = trace_bytes(model_config, layout, dtype, fed, k, False)
    if cfg.method == "occlusion":  # the KL stage's masked forwards, every target at once
        tokens, chunks, peak = masked_work(n, fed, row_bytes_fn(model_config, layout, dtype), budget)
        return Plan(0, fed + tokens, chunks, trace + peak, {"baseline": (fed + tokens, chunks + 1)})
    row = row_bytes_fn(model_config, layout, dtype, probes=1)
    lengths = [fed] if request.mode != "each" else [n + j for j in range(k)]
    tokens, chunks, peak = fed, 0, 0
    batch = {"integrated_gradients": cfg.ig_steps, "attention_rollout": 0}.get(cfg.method, 1)
    for length in lengths:
        per_chunk = max(1, budget // max(1, row(length)))
        tokens += batch * length
        chunks += max(1, -(-batch // per_chunk))  # the progress ticks of baseline_scores
        peak = max(peak, min(batch, per_chunk) * row(length))
    # a gradient row is a forward and a backward: two units per position
    return Plan(0, tokens, chunks, trace + peak, {"baseline": (fed + 2 * (tokens - fed), chunks + 1)})
