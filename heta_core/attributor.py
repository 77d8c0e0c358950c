"""``Attributor``: HETA (and baseline) attributions for one warm model — the engine's façade.

A call goes: inputs (:mod:`heta_core.inputs.targets`: resolve the input and target, check them
against the model) → the method's plan and run (:mod:`heta_core.methods.registry`; HETA is
:mod:`heta_core.methods.heta.pipeline`) → the result document (:mod:`heta_core.results.assemble`).
``estimate`` stops after the plan. Its two halves live beside it: :mod:`heta_core.planning` (the time
model, estimates, budgets), :mod:`heta_core.running` (running prepared calls, alone or packed) and
:mod:`heta_core.iterating` (results yielded as they come: a call's stages, a batch's prompts).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any, cast

import torch
from torch import nn

from .config import HetaConfig
from .errors import ConfigError, HetaError, InputError
from .inputs import targets
from .inputs.request import REQUEST_FIELDS, AttributionRequest
from .iterating import Iterating
from .models.handle import ModelHandle
from .models.placement import Placement, describe, stored_bytes
from .planning import Planning
from .results.schema import AttributionResult, BudgetPlan, Estimate
from .running import Running, _Call
from .runtime.cost import Speed, budget_bytes
from .runtime.graphs import graphs_for
from .runtime.packing import PACKINGS
from .runtime.precision import compute_dtype


class Attributor(Planning, Running, Iterating):
    """Attributions for a Hugging Face decoder-only model, kept warm between calls.

    Not thread-safe: a call temporarily changes the model's attention implementation and parameter
    grad flags. Use one Attributor per thread or process.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any = None,
        config: HetaConfig | None = None,
        *,
        name: str | None = None,
        revision: str | None = None,
    ):
        self.config = config or HetaConfig()
        self.handle = ModelHandle.wrap(model)
        loaded = cast(torch.dtype, model.dtype)  # transformers' PreTrainedModel.dtype
        dtype = compute_dtype(self.config.dtype, loaded)
        if dtype != loaded:
            if getattr(model, "hf_device_map", None) or describe(model).quantization:
                raise ConfigError(
                    f"dtype={self.config.dtype!r}: a model placed by a device map or quantized is not recast; "
                    "load it in that dtype instead",
                    field="dtype",
                )
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
        model, tokenizer = load_model(
            name,
            device=device,
            dtype=dtype,
            revision=revision,
            device_map=device_map,
            offload_folder=offload_folder,
            quantize=quantize,
        )
        attributor = cls(model, tokenizer, config, name=name_or_path, revision=revision)
        _ = attributor.revision  # hash local weights now, at load, not in the first request
        return attributor

    @classmethod
    def planner(
        cls, name_or_path: str, config: HetaConfig | None = None, dtype: str | torch.dtype | None = None
    ) -> Attributor:
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
    def graph_stats(self) -> dict[str, int]:
        """``cuda_graphs``: this model's chunk shapes captured as CUDA graphs, chunks replayed, chunks run
        eagerly (warm-up, CPU) and captures that failed (:mod:`heta_core.runtime.graphs`)."""
        return dict(graphs_for(self.model).stats)

    @property
    def num_layers(self) -> int:
        return self.handle.num_layers

    @property
    def model_type(self) -> str:
        """The architecture (``config.model_type``: gpt2, llama, ...)."""
        return str(getattr(self.model.config, "model_type", ""))

    @property
    def dtype(self) -> str:
        """The weights' dtype as a name (``float32``, ``bfloat16``, ...)."""
        return str(self.model.dtype).removeprefix("torch.")

    @property
    def max_positions(self) -> int | None:
        """The model's position limit (``max_position_embeddings``), if it has one."""
        return self.handle.max_positions

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
    ) -> tuple[HetaConfig, targets.Prepared, BudgetPlan | None]:
        """The config in force (with ``budget_s``: the preset the budget chooses), the checked request
        and the budget's plan, from ``attribute``'s / ``estimate``'s arguments."""
        cfg = config or self.config
        request = {name: arguments[name] for name in REQUEST_FIELDS}
        prepared = targets.prepare(self.handle, self.tokenizer, self.name, cfg, **request)
        if cfg.budget_s is None:
            return cfg, prepared, None
        cfg, plan = self._budgeted(cfg, prepared, arguments.get("generate"), measure)
        return cfg, prepared, plan

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
        (outcome,) = self._run(
            [_Call(cfg, prepared, progress, on_partial, started, plan=plan, planned=time.perf_counter())], "pad"
        )
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def attribute_many(
        self,
        calls: Sequence[Mapping[str, Any]],
        *,
        packing: str = "pad",
        on_outcome: Callable[[int, AttributionResult | Exception], None] | None = None,
    ) -> list[AttributionResult | Exception]:
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
        jobs: list[_Call | Exception] = []
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
                jobs.append(error)
        return self._run(jobs, packing, on_outcome)

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
