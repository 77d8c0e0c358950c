"""``Attributor``: HETA (and baseline) attributions for one warm model — the engine's façade.

A call goes: inputs (:mod:`heta_core.inputs.targets`: resolve the input and target, check them
against the model) → the method's plan and run (:mod:`heta_core.methods.registry`; HETA is
:mod:`heta_core.methods.heta.pipeline`) → the result document (:mod:`heta_core.results.assemble`).
``estimate`` stops after the plan.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from .config import HetaConfig
from .errors import BudgetError, ConfigError, HetaError, InputError, NonFiniteResultError
from .inputs import batch, targets
from .inputs.request import REQUEST_FIELDS, AttributionRequest
from .methods.registry import method
from .models.handle import ModelHandle
from .models.placement import Placement, describe, stored_bytes
from .results import diagnostics
from .results.assemble import assemble
from .results.schema import AttributionResult, BudgetPlan, Estimate
from .runtime.cost import Speed, assumed_speed, budget_bytes, fit_speed
from .runtime import faults
from .runtime.packing import PACKINGS
from .runtime.precision import compute_dtype
from .runtime.progress import BudgetSpent, Progress


@contextlib.contextmanager
def _inputs_only(model: nn.Module) -> Iterator[None]:
    """Differentiate w.r.t. inputs only: parameters stop requiring grad for the duration."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


@dataclass(eq=False)
class _Call:
    """One attribution on its way through :meth:`Attributor._run`."""

    cfg: HetaConfig | None
    prepared: targets.Prepared | None
    progress: Callable[[float], None] | None
    on_partial: Callable[[AttributionResult], None] | None
    started: float
    outcome: Any = None  # the result or the exception, once known
    plan: BudgetPlan | None = None  # how budget_s chose the run
    planned: float = 0.0  # time.perf_counter() once the plan was made (a budget runs from here)
    request: targets.Request | None = None
    tracker: Progress | None = None
    parts: Any = None


# the presets a time budget tries, most exact first
LADDER = ("exact", "balanced", "fast")


class _Stopped(Exception):
    """iter_stages' consumer stopped early."""


_END = object()


class Attributor:
    """Attributions for a Hugging Face decoder-only model, kept warm between calls.

    Not thread-safe: a call temporarily changes the model's attention implementation and parameter
    grad flags. Use one Attributor per thread or process.
    """

    def __init__(
        self, model: nn.Module, tokenizer: Any = None, config: HetaConfig | None = None, *,
        name: str | None = None, revision: str | None = None,
    ):  # fmt: skip
        self.config = config or HetaConfig()
        self.handle = ModelHandle.wrap(model)
        dtype = compute_dtype(self.config.dtype, model.dtype)
        if dtype != model.dtype:
            if getattr(model, "hf_device_map", None) or describe(model).quantization:
                raise ConfigError(f"dtype={self.config.dtype!r}: a model placed by a device map or quantized is not recast; "
                                  "load it in that dtype instead", field="dtype")  # fmt: skip
            model.to(dtype)  # an explicit upcast requested by HetaConfig.dtype
        model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", None) or type(model).__name__
        self._pinned = revision
        # the time model's rates on this model and device (calibrate(); a service planner gets its workers')
        self.speed: Speed | None = None

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        config: HetaConfig | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        revision: str | None = None,
        *,
        device_map: str | dict | None = None,
        offload_folder: str | None = None,
        quantize: str | None = None,
    ) -> Attributor:
        """Load by HF id (``id@revision`` pins one), local path or ``heta-demo``; safetensors only, no
        remote code. ``dtype=None``: the checkpoint's. ``device_map`` (``auto``, a strategy or a dict of
        module → ``cpu``/``disk``/GPU) splits the model with accelerate, ``disk`` modules kept in
        ``offload_folder``; ``quantize="int8"``: torchao int8 weight-only linear layers
        (:mod:`heta_core.models.placement`)."""
        from .models.loading import load_model, split_revision

        name, revision = split_revision(name_or_path, revision)
        model, tokenizer = load_model(name, device=device, dtype=dtype, revision=revision, device_map=device_map,
                                      offload_folder=offload_folder, quantize=quantize)  # fmt: skip
        attributor = cls(model, tokenizer, config, name=name_or_path, revision=revision)
        _ = attributor.revision  # hash local weights now, at load, not in the first request
        return attributor

    @classmethod
    def planner(cls, name_or_path: str, config: HetaConfig | None = None, dtype: str | torch.dtype | None = None) -> Attributor:
        """An Attributor without weights (meta device): ``estimate`` and input validation work,
        ``attribute`` does not. For front ends that admit work they never compute."""
        from .models.loading import load_planner, split_revision

        name, revision = split_revision(name_or_path)
        model, tokenizer = load_planner(name, dtype=dtype, revision=revision)
        return cls(model, tokenizer, config, name=name_or_path, revision=revision)

    @property
    def model(self) -> nn.Module:
        return self.handle.model

    @property
    def adapter(self):
        return self.handle.adapter

    @property
    def layout(self):
        return self.handle.layout

    @property
    def device(self) -> torch.device:
        return self.handle.device

    @property
    def placement(self) -> Placement:
        """dtype, quantization and the device map's modules per device (:mod:`heta_core.models.placement`)."""
        return describe(self.model)

    @property
    def num_layers(self) -> int:
        return self.handle.num_layers

    def chunk_budget_mb(self, config: HetaConfig | None = None) -> int:
        """The memory budget a batched chunk of this call gets: ``memory_budget_mb``, or the auto one
        (512 MB on CPU, half the free memory on CUDA)."""
        return budget_bytes((config or self.config).memory_budget_mb, self.device) // 2**20

    @cached_property
    def _weight_bytes(self) -> int:
        """Bytes of the parameters, counted once: walking them took most of an ``estimate`` (~0.1 ms)."""
        return sum(stored_bytes(p) for p in self.model.parameters())

    @cached_property
    def revision(self) -> str | None:
        """The exact weights (``meta.revision``): see :func:`heta_core.models.loading.model_revision`."""
        from .models.loading import model_revision, split_revision

        return model_revision(*split_revision(self.name, self._pinned))

    def _prepare(
        self, config: HetaConfig | None, arguments: dict[str, Any], measure: bool = False
    ) -> tuple[HetaConfig, targets.Prepared, BudgetPlan | None]:  # fmt: skip
        """The config in force (with ``budget_s``: the preset the budget chooses), the checked request
        and the budget's plan, from ``attribute``'s / ``estimate``'s arguments."""
        cfg = config or self.config
        request = {name: arguments[name] for name in REQUEST_FIELDS}
        prepared = targets.prepare(self.handle, self.tokenizer, self.name, cfg, **request)
        if cfg.budget_s is None:
            return cfg, prepared, None
        cfg, plan = self._budgeted(cfg, prepared, arguments.get("generate"), measure)
        return cfg, prepared, plan

    # ------------------------------------------------------------------ time

    def calibrate(self) -> Speed:
        """Measures this model's speed on its device for the time model (:mod:`heta_core.runtime.cost`):
        after a warm-up, small HETA attributions of random tokens at two lengths and two probe counts,
        each run twice (the faster run counts: a busy machine only ever slows a run down), about 0.5 s
        on heta-demo and a few seconds for a GPT-2-small on CPU. Their per-stage seconds against their
        planned work give the seconds per unit and per chunk. Kept in :attr:`speed`; ``estimate`` and
        ``budget_s`` use it."""
        positions = self.handle.max_positions or 4096
        generator = torch.Generator().manual_seed(0)
        samples = []
        shapes = [(min(12, positions), 2)] + [(min(length, positions), probes) for length in (8, 24) for probes in (1, 6)]
        for index, (length, probes) in enumerate(shapes):
            ids = torch.randint(0, self.handle.vocab_size, (max(2, length),), generator=generator).tolist()
            cfg = HetaConfig(num_hvp_samples=probes, dtype=self.config.dtype, cuda_streams=self.config.cuda_streams,
                             memory_budget_mb=self.config.memory_budget_mb)  # fmt: skip
            with faults.suspended():
                runs = [self.attribute(input_ids=ids, config=cfg).timings for _ in range(1 if index == 0 else 2)]
            if index == 0:
                continue  # the warm-up: first kernels, allocator, lazy imports
            prepared = targets.prepare(self.handle, self.tokenizer, self.name, cfg, input_ids=ids)
            work = self._work(prepared.request, cfg)
            seconds = {stage: min(getattr(t, f"{stage}_s") or 0.0 for t in runs) for stage in work}
            samples.append((work, seconds, min(t.compute_s for t in runs)))
        self.speed = fit_speed(samples)
        return self.speed

    def _speed(self, measure: bool) -> Speed:
        """The measured speed; measured now when ``measure`` and there are weights, else assumed from the model's size."""
        if self.speed is None and measure and self.device.type != "meta":
            self.calibrate()
        return self.speed or assumed_speed(self.handle.config, self.device)

    def _work(self, request, cfg: HetaConfig) -> dict[str, tuple[int, int]]:
        """Units and chunks per stage of the method (and diagnostics) for the time model."""
        work: dict[str, tuple[int, int]] = {}
        for plan in self._plans(request, cfg, budget_bytes(cfg.memory_budget_mb, self.device)):
            for stage, (units, chunks) in plan.work.items():
                work[stage] = (work.get(stage, (0, 0))[0] + units, work.get(stage, (0, 0))[1] + chunks)
        return work

    def _budgeted(self, cfg: HetaConfig, prepared, generate, measure: bool) -> tuple[HetaConfig, BudgetPlan]:
        """The most exact preset (from ``cfg.preset`` down) whose estimate fits ``cfg.budget_s``; when none
        does but the flow alone does, the cheapest, which then ends with the stages it has when the
        budget runs out. Not even the flow: :class:`BudgetError` with the cheapest plan's estimate."""
        speed = self._speed(measure)
        request = prepared.request
        estimates: dict[str, float] = {}
        chosen = None
        for preset in LADDER[LADDER.index(cfg.preset) :]:
            candidate = cfg.replace(preset=preset)
            work = self._work(request, candidate)
            estimates[preset] = speed.seconds(work)
            if chosen is None and estimates[preset] <= cfg.budget_s:
                chosen = candidate
                break
        cheapest = cfg.replace(preset=LADDER[-1])
        estimates["flow"] = speed.seconds({"flow": self._work(request, cheapest)["flow"]})
        if chosen is None:
            if estimates["flow"] > cfg.budget_s:
                estimate = self._estimate(cheapest, request, generate, speed)
                raise BudgetError(
                    f"not even HETA's first stage fits budget_s={cfg.budget_s:g}: the flow alone is estimated at "
                    f"{estimates['flow']:.3g} s and the cheapest preset ({LADDER[-1]}) at {estimates[LADDER[-1]]:.3g} s",
                    field="budget_s", details={"estimate": estimate.to_dict()},
                )  # fmt: skip
            chosen = cheapest
        plan = BudgetPlan(budget_s=cfg.budget_s, preset=chosen.preset, estimated_s=estimates[chosen.preset], estimates=estimates,
                          speed=speed.source)  # fmt: skip
        return chosen, plan

    def _estimate(self, cfg: HetaConfig, request, generate, speed: Speed, plan: BudgetPlan | None = None) -> Estimate:
        plans = self._plans(request, cfg, budget_bytes(cfg.memory_budget_mb, self.device))
        tokens = sum(p.forward_tokens for p in plans) + (request.targets if generate is not None else 0)  # + the generation
        return Estimate(
            prompt_tokens=request.scored, target_tokens=request.targets, hvps=sum(p.hvps for p in plans), forward_tokens=tokens,
            peak_bytes=self._weight_bytes + max(p.peak_bytes for p in plans),  # the passes run one after another
            seconds=speed.seconds(self._work(request, cfg)), plan=plan,
        )  # fmt: skip

    def attribute(
        self,
        text: str | Mapping | None = None,
        *,
        input_ids: Sequence[int] | torch.Tensor | Mapping | None = None,
        attention_mask: Sequence[int] | torch.Tensor | None = None,
        messages: list[dict] | None = None,
        target_position: int | None = None,
        target_text: str | None = None,
        target_mode: str = "sum",
        generate: int | None = None,
        granularity: str | Sequence[str] | None = None,
        spans: Sequence[tuple[int, int]] | None = None,
        include_template: bool = False,
        config: HetaConfig | None = None,
        progress: Callable[[float], None] | None = None,
        response_ids: Sequence[int] | None = None,
        foil_text: str | None = None,
        foil_id: int | None = None,
        on_partial: Callable[[AttributionResult], None] | None = None,
    ) -> AttributionResult:
        """Attribute a target (default: the input's last token) to every prompt token before it.

        Exactly one of ``text``, ``input_ids``, ``messages``. ``input_ids`` may be what a tokenizer
        returns (a list, a ``[T]`` / ``[1, T]`` tensor or array, a ``BatchEncoding`` — also as the
        first argument), so ``attribute(**tokenizer(text, return_tensors="pt"))`` works; the
        ``attention_mask`` drops padding on either side and refuses holes. At most one of ``target_position``,
        ``target_text`` (a continuation appended to the prompt), ``response_ids`` (a response produced
        elsewhere, as token ids appended exactly as given; a very unlikely token gets an
        ``unlikely_response`` warning) and ``generate`` (greedy tokens). ``foil_text`` / ``foil_id``:
        one token to contrast with a single target token — the methods then explain
        log p(target) − log p(foil) (docs/engine.md "Contrastive targets").
        ``target_mode``: "sum" (one attribution of the span's total log-probability) or "each" (a row
        per target token). ``granularity``: "word" and/or "sentence" aggregates; ``spans``: caller
        character spans to aggregate over; chat input always gets per-message aggregates.
        ``progress(fraction)`` is called between batched chunks; raising from it aborts the call.
        ``on_partial(result)`` receives each partial result (``partial=True``) as a stage finishes —
        HETA's flow, then flow and KL impact (and with ``config.diagnostics`` the three terms before the
        diagnostics); raising from it aborts the call. :meth:`iter_stages` yields the same documents.
        """
        started = time.perf_counter()
        cfg, prepared, plan = self._prepare(config, locals(), measure=True)
        (outcome,) = self._run([_Call(cfg, prepared, progress, on_partial, started, plan=plan, planned=time.perf_counter())], "pad")
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def attribute_many(
        self, calls: Sequence[Mapping[str, Any]], *, packing: str = "pad",
        on_outcome: Callable[[int, AttributionResult | Exception], None] | None = None,
    ) -> list[AttributionResult | Exception]:  # fmt: skip
        """Several attributions at once, their batched chunks packed into shared passes.

        ``calls``: one dict of :meth:`attribute` keyword arguments each (``config``, ``progress`` and
        ``on_partial`` included). HETA's masked forwards and Hessian-vector chunks of every call run in
        shared batches within the memory budget (prompts of different lengths padded and masked with
        ``packing="pad"``; with ``packing="length"`` only chunks of one length share a pass); each call
        keeps its own progress, partial results and fate. Returns one outcome per call, in order: its
        result, or the exception that ended it (bad input, its own progress callback raising, a
        failure) — one call's failure never fails the others. The numbers equal those of
        :meth:`attribute` (float64: to ~1e-15). Baselines run one call after another.
        ``on_outcome(index, outcome)`` is called as each call ends: a call whose own work is done is
        not held back by a larger one it shares batches with.
        """
        if packing not in PACKINGS:
            raise ConfigError(f"packing must be one of {', '.join(PACKINGS)}; got {packing!r}", field="packing")
        jobs = []
        for call in calls:
            started = time.perf_counter()
            arguments = dict(call)
            progress, on_partial, config = (arguments.pop(name, None) for name in ("progress", "on_partial", "config"))
            try:
                unknown = sorted(set(arguments) - set(REQUEST_FIELDS))
                if unknown:
                    raise InputError(f"attribute_many: unknown argument(s) {', '.join(unknown)}")
                cfg, prepared, plan = self._prepare(config, {**_DEFAULTS, **arguments}, measure=True)
                jobs.append(_Call(cfg, prepared, progress, on_partial, started, plan=plan, planned=time.perf_counter()))
            except HetaError as error:
                jobs.append(_Call(None, None, None, None, started, outcome=error))
        return self._run(jobs, packing, on_outcome)

    def iter_stages(self, *args: Any, **kwargs: Any) -> Iterator[AttributionResult]:
        """:meth:`attribute`'s partial results as each stage finishes, then the final result.

        Same arguments as :meth:`attribute` (except ``on_partial``). The attribution runs on a helper
        thread while the caller consumes; closing the iterator early stops it at its next chunk."""
        if "on_partial" in kwargs:
            raise InputError("iter_stages yields the partial results: leave out on_partial")
        documents: queue.Queue = queue.Queue()
        stop = threading.Event()
        progress = kwargs.pop("progress", None)

        def guarded(fraction: float) -> None:
            if stop.is_set():
                raise _Stopped
            if progress is not None:
                progress(fraction)

        def work() -> None:
            try:
                documents.put(self.attribute(*args, progress=guarded, on_partial=documents.put, **kwargs))
            except BaseException as error:  # noqa: BLE001 - handed to the consumer
                documents.put(error)
            documents.put(_END)

        thread = threading.Thread(target=work, name="heta-iter-stages", daemon=True)
        thread.start()
        try:
            while (item := documents.get()) is not _END:
                if isinstance(item, BaseException):
                    if not isinstance(item, _Stopped):
                        raise item
                    continue
                yield item
        finally:
            stop.set()
            thread.join()

    def _run(self, calls: list[_Call], packing: str, on_outcome: Callable | None = None) -> list[AttributionResult | Exception]:
        """Runs prepared calls (generation, the method, diagnostics, assembly); outcomes in order, each
        also handed to ``on_outcome(index, outcome)`` as soon as it is known."""

        def conclude(call: _Call) -> None:
            if call.parts is not None:
                self._finish(call)
            if on_outcome is not None:
                on_outcome(calls.index(call), call.outcome)

        runnable = []
        for call in calls:
            if call.outcome is not None:
                conclude(call)
                continue
            try:
                call.request = targets.with_generation(self.handle, self.tokenizer, call.prepared)
                budget = budget_bytes(call.cfg.memory_budget_mb, self.device)
                total = sum(plan.chunks for plan in self._plans(call.request, call.cfg, budget)) if call.progress else 1
                # the budget runs from the plan on: a first budgeted call's speed measurement is not charged to it
                until = call.planned + call.cfg.budget_s if call.cfg.budget_s is not None else None
                call.tracker = Progress(call.progress, total, until)
                runnable.append(call)
            except Exception as error:  # noqa: BLE001 - this call's outcome
                call.outcome = error
                conclude(call)
        together = [call for call in runnable if method(call.cfg.method).run_many is not None]

        def ended(index: int, outcome) -> None:  # diagnostics and the document at once, not after the others
            call = together[index]
            call.parts, call.outcome = (outcome, None) if not isinstance(outcome, BaseException) else (None, outcome)
            conclude(call)

        with _inputs_only(self.model):
            if together:
                entry = method(together[0].cfg.method)
                entry.run_many(self.handle, [(c.request, c.cfg, c.tracker, self._publisher(c)) for c in together], packing, ended)
            for call in runnable:
                if call in together:
                    continue
                try:
                    call.parts = method(call.cfg.method).run(self.handle, call.request, call.cfg, call.tracker, self._publisher(call))
                except Exception as error:  # noqa: BLE001
                    call.outcome = error
                conclude(call)
        return [call.outcome for call in calls]

    def _publisher(self, call: _Call) -> Callable | None:
        """The pipeline's ``publish(stages, parts)`` for a call with ``on_partial``: the partial document."""
        if call.on_partial is None:
            return None
        def publish(stages: tuple[str, ...], parts) -> None:
            if parts.complete and not call.cfg.diagnostics:
                return  # the final result follows at once
            try:
                document = self._assemble(call, parts, partial=True)
            except NonFiniteResultError:
                return  # the final result reports it
            call.on_partial(document)

        return publish

    def _finish(self, call: _Call) -> None:
        """Diagnostics (when asked) and the result document of a call whose method ran."""
        parts, faithfulness = call.parts, None
        try:
            if call.cfg.diagnostics and parts.stopped is None:
                budget = budget_bytes(call.cfg.memory_budget_mb, self.device)
                try:
                    # ranked by the result's own (float32) scores
                    scores = parts.values["score"].float()
                    faithfulness = diagnostics.diagnose(self.handle, call.request, call.cfg, scores, budget, call.tracker)
                except BudgetSpent:
                    parts.stopped = "budget"
            call.tracker.finish()
            call.outcome = self._assemble(call, parts, diagnostics=faithfulness)
        except Exception as error:  # noqa: BLE001
            call.outcome = error

    def _assemble(self, call: _Call, parts, *, partial: bool = False, diagnostics=None) -> AttributionResult:
        result = assemble(
            self.handle, self.tokenizer, self.name, self.revision, call.prepared, call.request, call.cfg, parts, 0.0,
            diagnostics=diagnostics, partial=partial,
        )  # fmt: skip
        if call.plan is not None:
            result.meta.plan = call.plan.model_copy(update={"stopped": parts.stopped})
        result.meta.timings.compute_s = time.perf_counter() - call.started  # the whole call: the result's assembly too
        return result

    def attribute_batch(
        self, inputs: Any, *, attention_mask: Any = None, config: HetaConfig | None = None,
        progress: Callable[[float], None] | None = None, errors: str = "raise", **shared: Any,
    ) -> list[AttributionResult | HetaError]:  # fmt: skip
        """One result per prompt, in order: ``list(iter_batch(...))``."""
        return list(self.iter_batch(inputs, attention_mask=attention_mask, config=config, progress=progress, errors=errors, **shared))

    def iter_batch(
        self, inputs: Any, *, attention_mask: Any = None, config: HetaConfig | None = None,
        progress: Callable[[float], None] | None = None, errors: str = "raise", **shared: Any,
    ) -> Iterator[AttributionResult | HetaError]:  # fmt: skip
        """Attribute several prompts on the warm model, yielding each result as it is done.

        ``inputs``: texts, message lists, id rows, ``attribute`` keyword dicts (each may carry its
        own ``config``), or a tokenizer's ``[B, T]`` output (``attention_mask`` rows drop padding):
        see :mod:`heta_core.inputs.batch`. ``shared`` keyword arguments of ``attribute`` (e.g.
        ``target_text``, ``granularity``) apply to every item that does not set them. Prompts run
        one after another — each one's batched chunks already fill the device — and every prompt
        is checked (as ``estimate`` checks) before the first one runs. ``progress(fraction)``
        covers the whole batch. ``errors="return"`` yields a prompt's :class:`HetaError` in its place instead of raising.
        """
        if errors not in ("raise", "return"):
            raise ConfigError(f"errors must be 'raise' or 'return', got {errors!r}", field="errors")
        misplaced = sorted((set(shared) - set(REQUEST_FIELDS)) | (set(shared) & set(batch.INPUT_FIELDS)))
        if misplaced:
            raise InputError(f"attribute_batch: {', '.join(misplaced)} cannot apply to every prompt (the prompts are `inputs`)")
        calls = []
        for item in batch.items(inputs, attention_mask):
            call = {**shared, **item}
            call["config"] = call.get("config") or config
            try:  # everything attribute checks, before the first prompt runs
                self.estimate(**call)
                calls.append(call)
            except HetaError as error:
                if errors == "raise":
                    raise
                calls.append(error)

        def scaled(index: int) -> Callable[[float], None] | None:
            return None if progress is None else (lambda fraction: progress((index + fraction) / len(calls)))

        for index, call in enumerate(calls):
            if isinstance(call, HetaError):
                yield call
            else:
                try:
                    yield self.attribute(**call, progress=scaled(index))
                except HetaError as error:  # found only by running (e.g. a non-finite result)
                    if errors == "raise":
                        raise
                    yield error
            if progress is not None:
                progress((index + 1) / len(calls))

    def _plans(self, request, cfg: HetaConfig, budget: int) -> list:
        """The method's plan and, with ``cfg.diagnostics``, the diagnostics' forwards after it."""
        plans = [method(cfg.method).plan(self.handle, request, cfg, budget)]
        if cfg.diagnostics:
            plans.append(diagnostics.plan(self.handle, request, cfg, budget))
        return plans

    def estimate(
        self,
        text: str | Mapping | None = None,
        *,
        input_ids: Sequence[int] | torch.Tensor | Mapping | None = None,
        attention_mask: Sequence[int] | torch.Tensor | None = None,
        messages: list[dict] | None = None,
        target_position: int | None = None,
        target_text: str | None = None,
        target_mode: str = "sum",
        generate: int | None = None,
        granularity: str | Sequence[str] | None = None,
        spans: Sequence[tuple[int, int]] | None = None,
        include_template: bool = False,
        config: HetaConfig | None = None,
        response_ids: Sequence[int] | None = None,
        foil_text: str | None = None,
        foil_id: int | None = None,
    ) -> Estimate:
        """Predicted HVPs, forward token positions and peak memory of ``attribute`` with the same
        arguments, without running the model (``generate=N`` is assumed to produce all N tokens).
        Validates everything ``attribute`` validates, so a request it accepts only fails for a
        reason no check could foresee.

        Uses the same chunk planner and memory model as the run itself, so the chunk part of the
        memory estimate is exactly what the budget allows. ``seconds`` prices the planned work with
        this model's measured speed (:meth:`calibrate`; a budgeted ``attribute`` measures it once), or
        one assumed from its size before that. With ``config.budget_s``: the plan the budget chooses.
        """
        cfg, prepared, plan = self._prepare(config, locals())
        return self._estimate(cfg, prepared.request, generate, self._speed(False), plan)


# attribute()'s request arguments and their defaults (attribute_many's calls leave out what they do not set)
_DEFAULTS = AttributionRequest.defaults()
