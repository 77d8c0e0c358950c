"""``Attributor``: HETA (and baseline) attributions for one warm model — the engine's façade.

A call goes: inputs (:mod:`heta_core.inputs.targets`: resolve the input and target, check them
against the model) → the method's plan and run (:mod:`heta_core.methods.registry`; HETA is
:mod:`heta_core.methods.heta.pipeline`) → the result document (:mod:`heta_core.results.assemble`).
``estimate`` stops after the plan.
"""

from __future__ import annotations

import contextlib
import inspect
import queue
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from .config import HetaConfig
from .errors import ConfigError, HetaError, InputError, NonFiniteResultError
from .inputs import batch, targets
from .methods.registry import method
from .models.handle import ModelHandle
from .results import diagnostics
from .results.assemble import assemble
from .results.schema import AttributionResult, Estimate
from .runtime.cost import budget_bytes
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
    request: targets.Request | None = None
    tracker: Progress | None = None
    parts: Any = None


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
            model.to(dtype)  # an explicit upcast requested by HetaConfig.dtype
        model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", None) or type(model).__name__
        self._pinned = revision

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        config: HetaConfig | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        revision: str | None = None,
    ) -> Attributor:
        """Load by HF id (``id@revision`` pins one), local path or ``heta-demo``; safetensors only, no
        remote code. ``dtype=None``: the checkpoint's."""
        from .models.loading import load_model, split_revision

        name, revision = split_revision(name_or_path, revision)
        model, tokenizer = load_model(name, device=device, dtype=dtype, revision=revision)
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
    def num_layers(self) -> int:
        return self.handle.num_layers

    def chunk_budget_mb(self, config: HetaConfig | None = None) -> int:
        """The memory budget a batched chunk of this call gets: ``memory_budget_mb``, or the auto one
        (512 MB on CPU, half the free memory on CUDA)."""
        return budget_bytes((config or self.config).memory_budget_mb, self.device) // 2**20

    @cached_property
    def _weight_bytes(self) -> int:
        """Bytes of the parameters, counted once: walking them took most of an ``estimate`` (~0.1 ms)."""
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    @cached_property
    def revision(self) -> str | None:
        """The exact weights (``meta.revision``): see :func:`heta_core.models.loading.model_revision`."""
        from .models.loading import model_revision, split_revision

        return model_revision(*split_revision(self.name, self._pinned))

    def _prepare(self, config: HetaConfig | None, arguments: dict[str, Any]) -> tuple[HetaConfig, targets.Prepared]:
        """The config in force and the checked request, from ``attribute``'s / ``estimate``'s arguments."""
        cfg = config or self.config
        request = {name: arguments[name] for name in targets.REQUEST_FIELDS}
        return cfg, targets.prepare(self.handle, self.tokenizer, self.name, cfg, **request)

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
        cfg, prepared = self._prepare(config, locals())
        (outcome,) = self._run([_Call(cfg, prepared, progress, on_partial, started)], "pad")
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def attribute_many(self, calls: Sequence[Mapping[str, Any]], *, packing: str = "pad") -> list[AttributionResult | Exception]:
        """Several attributions at once, their batched chunks packed into shared passes.

        ``calls``: one dict of :meth:`attribute` keyword arguments each (``config``, ``progress`` and
        ``on_partial`` included). HETA's masked forwards and Hessian-vector chunks of every call run in
        shared batches within the memory budget (prompts of different lengths padded and masked with
        ``packing="pad"``; with ``packing="length"`` only chunks of one length share a pass); each call
        keeps its own progress, partial results and fate. Returns one outcome per call, in order: its
        result, or the exception that ended it (bad input, its own progress callback raising, a
        failure) — one call's failure never fails the others. The numbers equal those of
        :meth:`attribute` (float64: to ~1e-15). Baselines run one call after another.
        """
        if packing not in PACKINGS:
            raise ConfigError(f"packing must be one of {', '.join(PACKINGS)}; got {packing!r}", field="packing")
        jobs = []
        for call in calls:
            started = time.perf_counter()
            arguments = dict(call)
            progress, on_partial, config = (arguments.pop(name, None) for name in ("progress", "on_partial", "config"))
            try:
                unknown = sorted(set(arguments) - set(targets.REQUEST_FIELDS))
                if unknown:
                    raise InputError(f"attribute_many: unknown argument(s) {', '.join(unknown)}")
                cfg, prepared = self._prepare(config, {**_DEFAULTS, **arguments})
                jobs.append(_Call(cfg, prepared, progress, on_partial, started))
            except HetaError as error:
                jobs.append(_Call(None, None, None, None, started, error))
        return self._run(jobs, packing)

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

    def _run(self, calls: list[_Call], packing: str) -> list[AttributionResult | Exception]:
        """Runs prepared calls (generation, the method, diagnostics, assembly); outcomes in order."""
        runnable = []
        for call in calls:
            if call.outcome is not None:
                continue
            try:
                call.request = targets.with_generation(self.handle, self.tokenizer, call.prepared)
                budget = budget_bytes(call.cfg.memory_budget_mb, self.device)
                total = sum(plan.chunks for plan in self._plans(call.request, call.cfg, budget)) if call.progress else 1
                call.tracker = Progress(call.progress, total)
                runnable.append(call)
            except Exception as error:  # noqa: BLE001 - this call's outcome
                call.outcome = error
        with _inputs_only(self.model):
            together = [call for call in runnable if method(call.cfg.method).run_many is not None]
            if together:
                entry = method(together[0].cfg.method)
                parts = entry.run_many(
                    self.handle, [(c.request, c.cfg, c.tracker, self._publisher(c)) for c in together], packing
                )  # fmt: skip
                for call, outcome in zip(together, parts):
                    call.parts, call.outcome = (outcome, None) if not isinstance(outcome, BaseException) else (None, outcome)
            for call in runnable:
                if call in together:
                    continue
                try:
                    call.parts = method(call.cfg.method).run(self.handle, call.request, call.cfg, call.tracker, self._publisher(call))
                except Exception as error:  # noqa: BLE001
                    call.outcome = error
        for call in runnable:
            if call.parts is not None:
                self._finish(call)
        return [call.outcome for call in calls]

    def _publisher(self, call: _Call) -> Callable | None:
        """The pipeline's ``publish(stages, parts)`` for a call with ``on_partial``: the partial document."""
        if call.on_partial is None:
            return None
        last = method(call.cfg.method).stages

        def publish(stages: tuple[str, ...], parts) -> None:
            if tuple(stages) == last and not call.cfg.diagnostics:
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
        misplaced = sorted((set(shared) - set(targets.REQUEST_FIELDS)) | (set(shared) & set(batch.INPUT_FIELDS)))
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
        memory estimate is exactly what the budget allows.
        """
        cfg, prepared = self._prepare(config, locals())
        request = prepared.request
        plans = self._plans(request, cfg, budget_bytes(cfg.memory_budget_mb, self.device))
        tokens = sum(plan.forward_tokens for plan in plans) + (request.targets if generate is not None else 0)  # + the generation
        weights = self._weight_bytes
        return Estimate(
            prompt_tokens=request.scored, target_tokens=request.targets, hvps=sum(plan.hvps for plan in plans), forward_tokens=tokens,
            peak_bytes=weights + max(plan.peak_bytes for plan in plans),  # the passes run one after another
        )  # fmt: skip


# attribute()'s request arguments and their defaults (attribute_many's calls leave out what they do not set)
_DEFAULTS = {
    name: parameter.default for name, parameter in inspect.signature(Attributor.attribute).parameters.items()
    if name in targets.REQUEST_FIELDS
}  # fmt: skip
