"""HETA for one request or several at once: trace → flow → kl → hessian → combine (HETA.md).

  1. trace   — one eager forward: attention probabilities, values, log P(·|X) at the predicting
               positions, KV cache (:mod:`heta_core.runtime.trace`)
  2. flow    — M_T from the trace (:mod:`.flow`)
  3. kl      — I from masked forwards (:mod:`.kl`)
  4. hessian — S from block HVPs or an approximation (:mod:`.hessian`)
  5. combine — Eq. 5 (:mod:`.combine`)

The stages run in this order and each finished stage is published as a partial result: M_T first
(milliseconds), then M_T with I, then the whole of Eq. 5 (:func:`.combine.estimate` scores the terms
known so far). ``strategy="reference"`` runs 3 and 4 as literal per-token loops over full sequences;
``"fast"`` batches them after the cached prefix. Both draw identical probes, so they agree to rounding.

Several requests (:func:`run_many`) go through the stages together: their masked forwards and
Hessian-vector chunks are packed into shared batches within the memory budget
(:mod:`heta_core.runtime.schedule`, :mod:`heta_core.runtime.packing`), each request keeping its own
progress, cancellation and failure. One request is the same run with one lane.

Targets: "each" attributes every target token independently (a target × prompt matrix); "sum"
attributes the span's total log-probability — I and M_T are then the sum / mean of the per-token
rows, S the curvature of the summed objective (HETA.md "Targets"). With a foil (``request.foil``,
one target token) S and I explain log p(y) − log p(foil) instead; M_T is unchanged
(docs/engine.md "Contrastive targets"). With ``window`` each of the authors' windows is a context
of its own; the terms are averaged over overlapping windows and M_T renormalised.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from ...models.adapters import eager_attention
from ...runtime.cost import budget_bytes, hessian_units, row_bytes_fn, trace_bytes
from ...runtime.masking import mask_vector, masked_chunks, masked_work
from ...runtime.prefix import StreamPool, SuffixRunner, plan_chunks, to_host
from ...runtime.progress import BudgetSpent
from ...runtime.schedule import Lane, Opaque, run_lanes
from ...runtime.trace import run_trace
from ..base import Parts, Plan, foil_logprob
from .combine import combine, estimate
from .flow import layer_value_norms, semantic_flow
from .hessian import OVERSAMPLE, Curvature, hvp_chunks, low_rank_sensitivity, sensitivity_reference
from .kl import impact, information_reference

STAGES = ("flow", "kl", "hessian")

# a partial result: (the stages done, the Parts scored from them)
Publish = Callable[[tuple[str, ...], Parts], None]


def _windows(n: int, cfg) -> list[int]:
    """Start positions of the authors' windows of ``cfg.window`` tokens over n > window prompt tokens."""
    stride = max(1, round(cfg.window * (1 - cfg.overlap)))
    return sorted(set(list(range(0, n - cfg.window, stride)) + [n - cfg.window]))


def _eagerly(model, compute: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """``compute`` under eager attention (second derivatives need materialised probabilities)."""

    def run() -> torch.Tensor:
        with eager_attention(model):
            return compute()

    return run


class _Window:
    """One context the three terms are computed over: the prompt ``ids[:n]`` and the targets ``ids[n:]``
    (the whole request, or one of the authors' windows starting at prompt position ``offset``)."""

    def __init__(self, handle, ids: list[int], n: int, mode: str, cfg, foil: int | None, offset: int = 0):
        self.handle, self.ids, self.n, self.mode, self.cfg, self.foil, self.offset = (
            handle,
            ids,
            n,
            mode,
            cfg,
            foil,
            offset,
        )
        self.count = len(ids) - n
        self.targets = torch.tensor(ids[n:], device=handle.device)
        self.embeds = handle.embed(ids[:-1])
        layer = handle.num_layers - cfg.curvature_layers if cfg.curvature_layers is not None else None
        self.curvature = Curvature(kind=cfg.curvature, layer=layer, low_rank=cfg.low_rank, foil=foil)
        self.block = handle.blocks()[layer] if layer is not None else None
        # "each": row j is an independent attribution of y_j from the prompt and y_<j
        self.rows = (
            [(len(ids) - 1, self.targets)]
            if mode != "each"
            else [(n + j, self.targets[j : j + 1]) for j in range(self.count)]
        )

    def flow(self) -> torch.Tensor:
        """Runs the trace and returns M_T ``[k, n]`` (float64 CPU)."""
        handle, cfg, model = self.handle, self.cfg, self.handle.model
        reference = cfg.strategy == "reference"
        with eager_attention(model):
            self.trace = run_trace(
                model,
                handle.adapter,
                handle.layout,
                self.embeds,
                predicting=self.count,
                keep_cache=True,
                full_logits=reference,
                full_attention=cfg.flow == "official",
                block_input_layers=(self.curvature.layer,) if self.curvature.layer is not None else (),
            )
            blocks = [handle.adapter.attention(b) for b in handle.blocks()]
            norms = layer_value_norms(blocks, handle.adapter, handle.layout, self.trace, mode=cfg.flow)
            flow = semantic_flow(self.trace, norms, mode=cfg.flow, reference=reference)[:, : self.n].cpu()
        self.runner = SuffixRunner(model, self.trace.kv)
        self.fill = mask_vector(self.embeds[: self.n], cfg.mask, model.get_input_embeddings())
        self.logprobs = [float(self.trace.logprobs[j, self.ids[self.n + j]]) for j in range(self.count)]
        self.foil_logprob = foil_logprob(self.trace.logprobs, self.foil)
        return flow.double()

    def kl_work(self, budget: int, slot) -> list:
        readout = impact(self.targets, self.foil)
        if self.cfg.strategy == "reference":
            model, trace = self.handle.model, self.trace
            return [
                Opaque(
                    slot, lambda: information_reference(model, self.embeds, trace.logprobs, self.fill, self.n, readout)
                )
            ]
        row = row_bytes_fn(self.handle.config, self.handle.layout, self.embeds.dtype)
        return masked_chunks(
            self.runner,
            self.embeds,
            self.trace.logprobs,
            self.fill,
            self.n,
            readout,
            row_bytes=row,
            budget_bytes=budget,
            slot=slot,
        )

    def hessian_work(self, budget: int, slot) -> list:
        """Per attribution row, its chunks; slots ``(slot, row)``."""
        cfg, handle = self.cfg, self.handle
        source = self.embeds if self.curvature.layer is None else self.trace.block_inputs[self.curvature.layer]
        work = []
        for index, (length, targets) in enumerate(self.rows):
            embeds, rows_source, place = self.embeds[:length], source[:length], (slot, index)
            if self.curvature.low_rank is not None:
                full_row = row_bytes_fn(handle.config, handle.layout, self.embeds.dtype, probes=1)
                work.append(
                    Opaque(
                        place,
                        _eagerly(
                            handle.model,
                            lambda e=embeds, s=rows_source, t=targets, row=full_row: low_rank_sensitivity(
                                self.runner,
                                e,
                                s,
                                t,
                                self.n,
                                cfg.num_hvp_samples,
                                cfg.seed,
                                self.curvature,
                                self.block,
                                row_bytes=row,
                                budget_bytes=budget,
                            )[0],
                        ),
                    )
                )
            elif cfg.strategy == "reference":
                work.append(
                    Opaque(
                        place,
                        _eagerly(
                            handle.model,
                            lambda e=embeds, s=rows_source, t=targets: sensitivity_reference(
                                handle.model, e, s, t, self.n, cfg.num_hvp_samples, cfg.seed, self.curvature, self.block
                            ),
                        ),
                    )
                )
            else:
                row = row_bytes_fn(handle.config, handle.layout, self.embeds.dtype, probes=cfg.num_hvp_samples)
                work += hvp_chunks(
                    self.runner,
                    embeds,
                    rows_source,
                    targets,
                    self.n,
                    cfg.num_hvp_samples,
                    cfg.seed,
                    self.curvature,
                    self.block,
                    row_bytes=row,
                    budget_bytes=budget,
                    slot=place,
                )
        return work

    def hvps(self, item) -> int:
        """HVPs one finished item of :meth:`hessian_work` computed."""
        if self.curvature.low_rank is not None:  # 2(k + o) full-sequence products
            length = self.rows[item.slot[1]][0]
            return 2 * min(self.curvature.low_rank + OVERSAMPLE, length * self.embeds.shape[1])
        if isinstance(item, Opaque):
            return self.n * self.cfg.num_hvp_samples
        return item.positions.shape[0] * self.cfg.num_hvp_samples


class _Job:
    """One request going through the stages: its windows, the terms known so far, its fate."""

    def __init__(self, handle, request, cfg, progress, publish: Publish | None):
        self.handle, self.request, self.cfg, self.progress, self.publish = handle, request, cfg, progress, publish
        self.budget = budget_bytes(cfg.memory_budget_mb, handle.device)
        n, ids = request.scored, request.doc.ids
        if cfg.window is None or n <= cfg.window:
            self.windows = [_Window(handle, ids, n, request.mode, cfg, request.foil)]
        else:
            targets = ids[n:]
            self.windows = [
                _Window(handle, ids[a : a + cfg.window] + targets, cfg.window, request.mode, cfg, request.foil, a)
                for a in _windows(n, cfg)
            ]
        self.skipped = skipped_stages(cfg)
        self.terms: dict[str, list[torch.Tensor]] = {}  # stage → per window, float64 CPU
        self.pending: dict[str, list[torch.Tensor]] = {}  # stage → per window, on the device until copied
        self.ready: dict[str, object] = {}  # stage → the CUDA event after which its pending tensors are complete
        self.timings = dict.fromkeys(STAGES, 0.0)
        self.hvps = 0
        self.shares: dict[str, tuple[StreamPool, float]] = {}  # stage → (its pool, this job's share of its rows)
        self.error: BaseException | None = None
        self.lane: Lane | None = None

    @property
    def live(self) -> bool:
        return self.error is None

    def run_flow(self) -> None:
        clock = time.perf_counter()
        self.terms["flow"] = [window.flow() for window in self.windows]
        self.timings["flow"] += time.perf_counter() - clock
        self.announce("flow")

    def next_stage(self, after: str | None = None) -> str | None:
        """The stage to run after ``after`` (after the flow: None), skipping those the config does not compute."""
        order = [stage for stage in STAGES[1:] if stage not in self.skipped]
        following = order if after is None else order[order.index(after) + 1 :]
        return following[0] if following else None

    def start(self, stage: str, streams: StreamPool) -> Lane:
        work = []
        for index, window in enumerate(self.windows):
            work += window.kl_work(self.budget, index) if stage == "kl" else window.hessian_work(self.budget, index)
        self.lane = Lane(work, self.progress.tick, self.budget, pool=streams, stage=stage, owner=self)
        return self.lane

    def finish(self, stage: str, streams: StreamPool) -> None:
        """The stage's lane is done: reduce its outputs per window on the device (copied later)."""
        lane, self.lane = self.lane, None
        self.timings[stage] += lane.seconds
        if stage == "hessian":
            self.hvps += sum(self.windows[item.slot[0]].hvps(item) for item in lane.items[: len(lane.outputs)])
        if lane.error is not None:
            self.error = lane.error
            return
        grouped = lane.by_slot()
        if stage == "kl":
            parts = [grouped[index] for index in range(len(self.windows))]
            self.pending["kl"] = [streams.gather(p).T for p in parts]  # [k, n]
        else:
            self.pending["hessian"] = [
                torch.stack([streams.gather(grouped[(index, row)]) for row in range(len(window.rows))])
                for index, window in enumerate(self.windows)
            ]  # [rows, n]
        if streams.streams:
            event = torch.cuda.Event()
            event.record(streams.streams[0])
            self.ready[stage] = event

    def collect(self, stage: str, block: bool = False) -> bool:
        """Copies a finished stage's terms to the host and publishes them; False while the device is
        still computing them (and ``block`` is false)."""
        if stage not in self.pending:
            return stage in self.terms
        event = self.ready.get(stage)
        if event is not None:
            if not block and not event.query():
                return False
            torch.cuda.current_stream(self.handle.device).wait_event(event)
        self.terms[stage] = [t.double() for t in to_host(self.pending.pop(stage))]
        self.announce(stage)
        return True

    def announce(self, stage: str) -> None:
        if self.publish is None or not self.live:
            return
        try:
            self.publish(self.done, self.parts())
        except Exception as error:  # noqa: BLE001 - the caller's callback stopped this call, no other
            self.error = error

    @property
    def done(self) -> tuple[str, ...]:
        return tuple(stage for stage in STAGES if stage in self.terms)

    def merged(self, stage: str) -> torch.Tensor | None:
        """A term over the whole prompt: the window's, or the windows' average (M_T renormalised)."""
        if stage not in self.terms:
            return None
        values = self.terms[stage]
        if stage == "hessian":
            values = [v if self.request.mode == "each" else v[0] for v in values]
        if len(self.windows) == 1:
            return values[0]
        n = self.request.scored
        total = torch.zeros((*values[0].shape[:-1], n), dtype=torch.float64)
        counts = torch.zeros(n, dtype=torch.float64)
        for window, value in zip(self.windows, values, strict=True):
            total[..., window.offset : window.offset + window.n] += value
            counts[window.offset : window.offset + window.n] += 1
        total = total / counts
        return total / total.sum(-1, keepdim=True) if stage == "flow" else total

    def parts(self) -> Parts:
        """Eq. 5 once every term of nonzero weight is known; before, the estimate from the terms known
        so far (:func:`.combine.estimate`); as the method's Parts."""
        flow, kl, hessian = self.merged("flow"), self.merged("kl"), self.merged("hessian")
        if self.request.mode != "each":
            flow = flow.mean(0)
            flow = flow / flow.sum()
            kl = kl.sum(0) if kl is not None else None
        cfg = self.cfg
        complete = all(stage in self.terms for stage in STAGES if stage not in self.skipped)
        if complete:  # a term of weight 0 was not computed: zeros give Eq. 5 exactly
            zeros = torch.zeros_like(flow)
            scores = combine(
                flow,
                zeros if hessian is None else hessian,
                zeros if kl is None else kl,
                beta=cfg.beta,
                gamma=cfg.gamma,
                normalize=cfg.normalize,
            )
        else:
            scores = estimate(flow, hessian, kl, beta=cfg.beta, gamma=cfg.gamma, normalize=cfg.normalize)
        values = {"score": scores, "flow": flow}
        values.update({name: term for name, term in (("hessian", hessian), ("kl", kl)) if term is not None})
        first = self.windows[0]
        timings = {stage: self.timings[stage] for stage in STAGES if stage not in self.skipped}
        return Parts(
            values, first.logprobs, self.hvps, timings, first.foil_logprob, stages=self.done, complete=complete
        )


def skipped_stages(cfg) -> set[str]:
    """Stages the config does not compute: a term of weight 0 in Eq. 5 (``beta=0`` skips S, ``gamma=0`` skips I)."""
    return {stage for stage, weight in (("kl", cfg.gamma), ("hessian", cfg.beta)) if weight == 0}


def run(handle, request, cfg, progress, publish: Publish | None = None) -> Parts:
    (outcome,) = run_many(handle, [(request, cfg, progress, publish)])
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def run_many(
    handle, calls: Sequence[tuple], packing: str = "pad", finished: Callable[[int, object], None] | None = None
) -> list:
    """``calls``: (request, config, progress, publish or None) each. One outcome per call, in order:
    its Parts, or the exception that ended it (its progress callback's, or its own failure).
    ``finished(index, outcome)`` is called as each call ends — a call whose work is done does not
    wait for the others' (a small request batched with a large one is answered at once).

    Every call runs its flow first; then each goes through its stages on its own (KL, then the Hessian
    term), its chunks sharing batches with the other calls' chunks of the same kind in every round
    (:func:`~heta_core.runtime.schedule.run_lanes`). A call whose progress raises
    :class:`~heta_core.runtime.progress.BudgetSpent` ends with the terms it has: its Parts are those of
    its last partial."""
    jobs = [_Job(handle, request, cfg, progress, publish) for request, cfg, progress, publish in calls]
    outcomes: list = [None] * len(jobs)

    def end(job: _Job) -> None:
        index = jobs.index(job)
        try:
            for stage in STAGES[1:]:
                if job.live or isinstance(job.error, BudgetSpent):
                    job.collect(stage, block=True)
        except Exception as error:  # noqa: BLE001
            job.error = error
        for stage, (pool, share) in job.shares.items():
            if pool.streams:  # a GPU stage's device time, read once its work is done
                job.timings[stage] = pool.seconds * share
        if job.error is None:
            outcomes[index] = job.parts()
        elif isinstance(job.error, BudgetSpent):
            outcomes[index] = job.parts()
            outcomes[index].stopped = "budget"
        else:
            outcomes[index] = job.error
        if finished is not None:
            finished(index, outcomes[index])

    streams = max(job.cfg.cuda_streams for job in jobs)
    pools = {stage: StreamPool(handle.device, streams) for stage in STAGES[1:]}
    lanes: list[Lane] = []

    def advance(job: _Job, after: str | None) -> None:
        """Starts the job's next stage, or ends the job."""
        stage = job.next_stage(after) if job.live else None
        if stage is None:
            end(job)
            return
        try:
            lanes.append(job.start(stage, pools[stage]))
        except Exception as error:  # noqa: BLE001 - this call's failure, not the others'
            job.error = error
            end(job)

    def lane_done(lane: Lane) -> None:
        job, stage = lane.owner, lane.stage
        rows = sum(item.count for item in lane.items)
        job.shares[stage] = (
            lane.pool,
            rows / max(1, sum(item.count for other in lanes if other.stage == stage for item in other.items)),
        )
        job.finish(stage, lane.pool)
        if not lane.pool.streams and job.live:
            job.collect(stage, block=True)  # on the CPU the terms are there: publish them now
        advance(job, stage)

    def publish_finished() -> None:  # on a GPU a stage's kernels run on while later chunks are issued
        for job in jobs:
            if job.live and "kl" in job.pending:
                job.collect("kl")

    for job in jobs:
        try:
            job.run_flow()
        except Exception as error:  # noqa: BLE001 - this call's failure, not the others'
            job.error = error
        advance(job, None)
    run_lanes(lanes, packing, between=publish_finished, done=lane_done)
    for pool in pools.values():
        pool.finish()
        pool.join()
    return outcomes


def plan(handle, request, cfg, budget: int) -> Plan:
    """Mirrors :func:`run` with the same chunk planner: HVPs, token positions, chunks and peak bytes."""
    model_config, layout, dtype = handle.config, handle.layout, handle.dtype
    kl_row = row_bytes_fn(model_config, layout, dtype)
    hvp_row = row_bytes_fn(model_config, layout, dtype, probes=cfg.num_hvp_samples)
    full_row = row_bytes_fn(model_config, layout, dtype, probes=1)
    reference = cfg.strategy == "reference"
    n, k = request.scored, request.targets
    windows = [n] if cfg.window is None or n <= cfg.window else [cfg.window] * len(_windows(n, cfg))
    hvps = tokens = chunks = chunk_peak = traces = 0
    work = {stage: [0, 0] for stage in STAGES}  # (units, chunks) for the time model

    def add(stage: str, units: int, count: int) -> None:
        work[stage][0] += units
        work[stage][1] += count

    m = cfg.num_hvp_samples
    skipped = skipped_stages(cfg)
    for scored in windows:
        fed = scored + k - 1
        tokens += fed
        add("flow", fed, 1)
        traces += trace_bytes(
            model_config, layout, dtype, fed, k, cfg.flow == "official"
        )  # every window's is kept to the end
        rows = [fed] if request.mode != "each" else [scored + j for j in range(k)]
        if "kl" in skipped:
            pass
        elif reference:
            tokens += scored * fed  # one full forward per masked token
            chunks += 1
            add("kl", scored * fed, 1)
            chunk_peak = max(chunk_peak, full_row(fed))
        else:
            masked_tokens, masked_chunks_, masked_peak = masked_work(scored, fed, kl_row, budget)
            tokens += masked_tokens
            chunks += masked_chunks_
            add("kl", masked_tokens, masked_chunks_)
            chunk_peak = max(chunk_peak, masked_peak)
        for length in rows if "hessian" not in skipped else ():
            if cfg.low_rank is not None:  # one full-sequence graph, 2(k+o) products, one progress tick
                columns = min(cfg.low_rank + OVERSAMPLE, length * model_config.hidden_size)
                hvps += 2 * columns
                tokens += length
                chunks += 1
                group = max(1, min(columns, budget // max(1, full_row(length))))
                add("hessian", hessian_units(length, 2 * columns), -(-2 * columns // group))
                chunk_peak = max(chunk_peak, group * full_row(length))
                continue
            if reference:  # one full-sequence HVP per token and probe, one progress tick per row
                hvps += scored * m
                tokens += scored * m * length
                chunks += 1
                add("hessian", scored * m * hessian_units(length, 1), 1)
                continue
            hvps += scored * m
            for lo, hi in plan_chunks(list(range(scored)), length, hvp_row, budget):
                tokens += (hi - lo) * (length - lo)
                chunks += 1
                add("hessian", hessian_units((hi - lo) * (length - lo), m), 1)
                chunk_peak = max(chunk_peak, (hi - lo) * hvp_row(length - lo, length))
    used = {stage: (units, count) for stage, (units, count) in work.items() if count}
    return Plan(hvps, tokens, chunks, traces + chunk_peak, used)
