"""HETA for one request: trace → flow → kl → hessian → combine (HETA.md).

  1. trace   — one eager forward: attention probabilities, values, log P(·|X) at the predicting
               positions, KV cache (:mod:`heta_core.runtime.trace`)
  2. flow    — M_T from the trace (:mod:`.flow`)
  3. kl      — I from masked forwards (:mod:`.kl`)
  4. hessian — S from block HVPs or an approximation (:mod:`.hessian`)
  5. combine — Eq. 5 (:mod:`.combine`)

``strategy="reference"`` runs 3 and 4 as literal per-token loops over full sequences; ``"fast"``
batches them after the cached prefix. Both draw identical probes, so they agree to rounding.
Targets: "each" attributes every target token independently (a target × prompt matrix); "sum"
attributes the span's total log-probability — I and M_T are then the sum / mean of the per-token
rows, S the curvature of the summed objective (HETA.md "Targets"). With a foil (``request.foil``,
one target token) S and I explain log p(y) − log p(foil) instead; M_T is unchanged
(docs/engine.md "Contrastive targets").
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch.profiler import record_function

from ...models.adapters import eager_attention
from ...runtime.batching import StreamPool, SuffixRunner, plan_chunks, to_host
from ...runtime.cost import budget_bytes, row_bytes_fn, trace_bytes
from ...runtime.masking import mask_vector, masked_work
from ...runtime.trace import run_trace
from ..base import Parts, Plan, foil_logprob
from .combine import combine
from .flow import layer_value_norms, semantic_flow
from .hessian import OVERSAMPLE, Curvature, low_rank_sensitivity, sensitivity, sensitivity_reference
from .kl import impact, information, information_reference

STAGES = ("flow", "kl", "hessian")


@dataclass
class Terms:
    """The three terms over the prompt, per predicting position (float64 CPU)."""

    flow: torch.Tensor  # [k, n]
    kl: torch.Tensor  # [k, n]
    hessian: torch.Tensor  # [n] ("sum") or [k, n] ("each")
    logprobs: list[float]
    hvps: int
    foil_logprob: float | None = None


def run(handle, request, cfg, progress) -> Parts:
    timings = dict.fromkeys(STAGES, 0.0)
    terms = _windowed(handle, request, cfg, timings, progress)
    if request.mode == "each":
        flow, kl = terms.flow, terms.kl
    else:
        flow = terms.flow.mean(0)
        flow = flow / flow.sum()
        kl = terms.kl.sum(0)
    scores = combine(flow, terms.hessian, kl, beta=cfg.beta, gamma=cfg.gamma, normalize=cfg.normalize)
    values = {"score": scores.float(), "flow": flow.float(), "hessian": terms.hessian.float(), "kl": kl.float()}
    return Parts(values, terms.logprobs, terms.hvps, timings, terms.foil_logprob)


def _windows(n: int, cfg) -> list[int]:
    """Start positions of the authors' windows of ``cfg.window`` tokens over n > window prompt tokens."""
    stride = max(1, round(cfg.window * (1 - cfg.overlap)))
    return sorted(set(list(range(0, n - cfg.window, stride)) + [n - cfg.window]))


def _windowed(handle, request, cfg, timings: dict, progress) -> Terms:
    """Exact, or the authors' windowing: each window of the prompt followed by the targets."""
    n = request.scored
    if cfg.window is None or n <= cfg.window:
        return _compute(handle, request.doc.ids, n, request.mode, cfg, timings, progress, request.foil)
    targets = request.doc.ids[n:]
    total: Terms | None = None
    counts = torch.zeros(n, dtype=torch.float64)
    for a in _windows(n, cfg):
        b = a + cfg.window
        window = _compute(handle, request.doc.ids[a:b] + targets, cfg.window, request.mode, cfg, timings, progress, request.foil)
        if total is None:
            shape = lambda t: (*t.shape[:-1], n)  # noqa: E731
            total = Terms(
                torch.zeros(shape(window.flow), dtype=torch.float64), torch.zeros(shape(window.kl), dtype=torch.float64),
                torch.zeros(shape(window.hessian), dtype=torch.float64), window.logprobs, 0, window.foil_logprob,
            )  # fmt: skip
        for name in STAGES:
            getattr(total, name)[..., a:b] += getattr(window, name)
        total.hvps += window.hvps
        counts[a:b] += 1
    for name in STAGES:
        setattr(total, name, getattr(total, name) / counts)
    total.flow = total.flow / total.flow.sum(-1, keepdim=True)  # M_T renormalised over the whole prompt
    return total


def _curvature(handle, cfg, foil: int | None) -> tuple[Curvature, torch.nn.Module | None]:
    layer = handle.num_layers - cfg.curvature_layers if cfg.curvature_layers is not None else None
    block = handle.blocks()[layer] if layer is not None else None
    return Curvature(kind=cfg.curvature, layer=layer, low_rank=cfg.low_rank, foil=foil), block


def _compute(handle, ids: list[int], n: int, mode: str, cfg, timings: dict, progress, foil: int | None = None) -> Terms:
    """Flow, KL (or the contrast's change) and S for prompt ``ids[:n]`` and targets ``ids[n:]`` (float64 CPU tensors)."""
    model, device = handle.model, handle.device
    reference = cfg.strategy == "reference"
    count = len(ids) - n
    targets = torch.tensor(ids[n:], device=device)
    embeds = handle.embed(ids[:-1])
    budget = budget_bytes(cfg.memory_budget_mb, device)
    curvature, block = _curvature(handle, cfg, foil)
    readout = impact(targets, foil)

    clock = time.perf_counter()
    with eager_attention(model):
        trace = run_trace(
            model, handle.adapter, handle.layout, embeds, predicting=count, keep_cache=True, full_logits=reference,
            full_attention=cfg.flow == "official",
            block_input_layers=(curvature.layer,) if curvature.layer is not None else (),
        )  # fmt: skip
        blocks = [handle.adapter.attention(b) for b in handle.blocks()]
        norms = layer_value_norms(blocks, handle.adapter, handle.layout, trace, mode=cfg.flow)
        flow = semantic_flow(trace, norms, mode=cfg.flow, reference=reference)[:, :n].cpu()
    logprobs = [float(trace.logprobs[j, ids[n + j]]) for j in range(count)]
    timings["flow"] += time.perf_counter() - clock

    source = embeds if curvature.layer is None else trace.block_inputs[curvature.layer]
    fill = mask_vector(embeds[:n], cfg.mask, model.get_input_embeddings())
    runner = SuffixRunner(model, trace.kv)
    # "each": row j is an independent attribution of y_j from the prompt and y_<j
    rows = [(len(ids) - 1, targets)] if mode != "each" else [(n + j, targets[j : j + 1]) for j in range(count)]
    hessians, hvps = [], 0

    def sensitivities(streams: StreamPool | None) -> None:
        nonlocal hvps
        with eager_attention(model):
            for length, row_targets in rows:
                hessian, used = _sensitivity(handle, runner, embeds[:length], source[:length], row_targets, n, cfg, curvature, block, budget, streams)
                hessians.append(hessian)
                hvps += used

    if reference:
        progress.tick()
        clock = time.perf_counter()
        kl = information_reference(model, embeds, trace.logprobs, fill, n, readout)
        timings["kl"] += time.perf_counter() - clock
        clock = time.perf_counter()
        sensitivities(None)
        timings["hessian"] += time.perf_counter() - clock
    else:
        kl_streams = StreamPool(device, cfg.cuda_streams, progress.tick)
        hvp_streams = StreamPool(device, cfg.cuda_streams, progress.tick)
        # named host ranges: a profiler trace attributes each stage's kernels (`heta bench`'s overlap proof)
        with record_function("heta.kl"):
            kl = information(
                runner, embeds, trace.logprobs, fill, n,
                row_bytes=row_bytes_fn(model.config, handle.layout, embeds.dtype), budget_bytes=budget, streams=kl_streams,
                readout=readout,
            )  # fmt: skip
        with record_function("heta.hessian"):
            sensitivities(hvp_streams)
        kl_streams.join()
        hvp_streams.join()
        timings["kl"] += kl_streams.seconds
        timings["hessian"] += hvp_streams.seconds
    kl, *hessians = to_host([kl, *hessians])
    hessian = torch.stack(hessians)
    return Terms(
        flow=flow.double(),
        kl=kl.double().T,
        hessian=(hessian if mode == "each" else hessian[0]).double(),
        logprobs=logprobs,
        hvps=hvps,
        foil_logprob=foil_logprob(trace.logprobs, foil),
    )


def _sensitivity(handle, runner, embeds, source, targets, n, cfg, curvature, block, budget, streams):
    if curvature.low_rank is not None:
        full_row = row_bytes_fn(handle.config, handle.layout, embeds.dtype, probes=1)
        return low_rank_sensitivity(
            runner, embeds, source, targets, n, cfg.num_hvp_samples, cfg.seed, curvature, block,
            row_bytes=full_row, budget_bytes=budget, streams=streams,
        )  # fmt: skip
    if streams is None:
        scores = sensitivity_reference(handle.model, embeds, source, targets, n, cfg.num_hvp_samples, cfg.seed, curvature, block)
        return scores, n * cfg.num_hvp_samples
    return sensitivity(
        runner, embeds, source, targets, n, cfg.num_hvp_samples, cfg.seed, curvature, block,
        row_bytes=row_bytes_fn(handle.config, handle.layout, embeds.dtype, probes=cfg.num_hvp_samples),
        budget_bytes=budget, streams=streams,
    )  # fmt: skip


def plan(handle, request, cfg, budget: int) -> Plan:
    """Mirrors :func:`run` with the same chunk planner: HVPs, token positions, chunks and peak bytes."""
    model_config, layout, dtype = handle.config, handle.layout, handle.dtype
    kl_row = row_bytes_fn(model_config, layout, dtype)
    hvp_row = row_bytes_fn(model_config, layout, dtype, probes=cfg.num_hvp_samples)
    full_row = row_bytes_fn(model_config, layout, dtype, probes=1)
    reference = cfg.strategy == "reference"
    n, k = request.scored, request.targets
    windows = [n] if cfg.window is None or n <= cfg.window else [cfg.window] * len(_windows(n, cfg))
    hvps = tokens = chunks = chunk_peak = trace_peak = 0
    for scored in windows:
        fed = scored + k - 1
        tokens += fed
        trace_peak = max(trace_peak, trace_bytes(model_config, layout, dtype, fed, k, cfg.flow == "official"))
        rows = [fed] if request.mode != "each" else [scored + j for j in range(k)]
        if reference:
            tokens += scored * fed  # one full forward per masked token
            chunks += 1
            chunk_peak = max(chunk_peak, full_row(fed))
        else:
            masked_tokens, masked_chunks, masked_peak = masked_work(scored, fed, kl_row, budget)
            tokens += masked_tokens
            chunks += masked_chunks
            chunk_peak = max(chunk_peak, masked_peak)
        for length in rows:
            if cfg.low_rank is not None:  # one full-sequence graph, 2(k+o) products
                columns = min(cfg.low_rank + OVERSAMPLE, length * model_config.hidden_size)
                hvps += 2 * columns
                tokens += length
                chunks += 0 if reference else 1
                group = max(1, min(columns, budget // max(1, full_row(length))))
                chunk_peak = max(chunk_peak, group * full_row(length))
                continue
            hvps += scored * cfg.num_hvp_samples
            if reference:  # one full-sequence HVP per token and probe
                tokens += scored * cfg.num_hvp_samples * length
                continue
            for lo, hi in plan_chunks(list(range(scored)), length, hvp_row, budget):
                tokens += (hi - lo) * (length - lo)
                chunks += 1
                chunk_peak = max(chunk_peak, (hi - lo) * hvp_row(length - lo, length))
    return Plan(hvps, tokens, chunks, trace_peak + chunk_peak)
