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
of its own (:mod:`.window` holds one context's work); the terms are averaged over overlapping
windows and M_T renormalised.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from ...runtime.cost import budget_bytes, hessian_units, row_bytes_fn, trace_bytes
from ...runtime.masking import masked_work
from ...runtime.prefix import StreamPool, plan_chunks, to_host
from ...runtime.progress import BudgetSpent
from ...runtime.schedule import Lane, run_lanes
from ..base import Parts, Plan
from .combine import combine, estimate
from .hessian_static import static_layout
from .low_rank import OVERSAMPLE
from .window import Window, window_starts

STAGES = ("flow", "kl", "hessian")

# a partial result: (the stages done, the Parts scored from them)
Publish = Callable[[tuple[str, ...], Parts], None]


class _Job:
    """One request going through the stages: its windows, the terms known so far, its fate."""

    def __init__(self, handle, request, cfg, progress, publish: Publish | None):
        self.handle, self.request, self.cfg, self.progress, self.publish = handle, request, cfg, progress, publish
        self.budget = budget_bytes(cfg.memory_budget_mb, handle.device)
        n, ids = request.scored, request.doc.ids
        if cfg.window is None or n <= cfg.window:
            self.windows = [Window(handle, ids, n, request.mode, cfg, request.foil)]
        else:
            targets = ids[n:]
            self.windows = [
                Window(handle, ids[a : a + cfg.window] + targets, cfg.window, request.mode, cfg, request.foil, a)
                for a in window_starts(n, cfg)
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
    windows = [n] if cfg.window is None or n <= cfg.window else [cfg.window] * len(window_starts(n, cfg))
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
            if cfg.cuda_graphs:  # every chunk B rows of the padded length L (hessian_static)
                rows, padded, count = static_layout(scored, length, handle.max_positions, hvp_row, budget)
                tokens += count * rows * padded
                chunks += count
                add("hessian", hessian_units(count * rows * padded, m), count)
                chunk_peak = max(chunk_peak, rows * hvp_row(padded, padded))
                continue
            for lo, hi in plan_chunks(list(range(scored)), length, hvp_row, budget):
                tokens += (hi - lo) * (length - lo)
                chunks += 1
                add("hessian", hessian_units((hi - lo) * (length - lo), m), 1)
                chunk_peak = max(chunk_peak, (hi - lo) * hvp_row(length - lo, length))
    used = {stage: (units, count) for stage, (units, count) in work.items() if count}
    return Plan(hvps, tokens, chunks, traces + chunk_peak, used)
