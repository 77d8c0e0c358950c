"""``Attributor``: HETA attributions for one warm model.

Pipeline for a prompt x_0..x_{n-1} and target token(s) y_1..y_k (HETA.md):
  1. trace   — one eager forward: attention probabilities, values, log P(·|X) at the predicting
               positions, KV cache
  2. flow    — M_T from the trace (:mod:`heta_core.flow`)
  3. kl      — I from masked forwards (:mod:`heta_core.kl`)
  4. hessian — S from block HVPs or an approximation (:mod:`heta_core.hessian`)
  5. combine — Eq. 5 (:mod:`heta_core.combine`)
``strategy="reference"`` runs 3 and 4 as literal per-token loops over full sequences; ``"fast"``
batches them after the cached prefix. Both draw identical probes, so they agree to rounding.

Targets: the next token (default: the last token of the input, or ``target_position``), a given
continuation (``target_text``) or a greedy generation (``generate=N``); spans are attributed as one
("sum") or per token ("each", a target × prompt matrix), as HETA.md "Targets" defines.
"""

from __future__ import annotations

import contextlib
import numbers
import platform
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from .adapters import HeadLayout, adapter_for, eager_attention
from .baselines import baseline_scores, occlusion
from .batching import StreamPool, SuffixRunner, plan_chunks
from .combine import combine
from .config import HetaConfig
from .cost import budget_bytes, row_bytes_fn, trace_bytes
from .errors import ConfigError, InputError
from .flow import layer_value_norms, semantic_flow
from .granularity import GRANULARITIES, aggregate, check_spans, segments
from .hessian import Curvature, OVERSAMPLE, low_rank_sensitivity, sensitivity, sensitivity_reference
from .inputs import Document, encode_text, from_messages, from_text
from .kl import information, information_reference, mask_vector
from .precision import compute_dtype
from .result import AttributionResult, Estimate, TargetInfo, TokenInfo
from .trace import run_trace

TARGET_MODES = ("sum", "each")
STAGES = ("flow", "kl", "hessian")


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


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


def _masked_work(scored: int, fed: int, row_bytes, budget: int) -> tuple[int, int, int]:
    """(forward token positions, chunks, largest chunk bytes) of the batched masked forwards of
    :func:`heta_core.kl.information` (the KL stage and occlusion) for ``scored`` masked tokens."""
    tokens = chunks = peak = 0
    for lo, hi in plan_chunks(list(range(scored)), fed, row_bytes, budget):
        tokens += (hi - lo) * (fed - lo)
        chunks += 1
        peak = max(peak, (hi - lo) * row_bytes(fed - lo))
    return tokens, chunks, peak


@dataclass
class _Request:
    """A resolved request: the token document (prompt + targets), n scored prompt tokens, the mode."""

    doc: Document
    scored: int
    mode: str  # "single" | "sum" | "each"

    @property
    def targets(self) -> int:
        return len(self.doc.ids) - self.scored


class _Progress:
    """Counts chunks against the plan and reports the fraction done to the caller's callback.

    The callback runs on the host between chunks; an exception it raises (e.g. a cancellation)
    aborts the attribution, and the model's settings are restored on the way out.
    """

    def __init__(self, callback, total: int):
        self.callback, self.total, self.done = callback, max(1, total), 0

    def tick(self) -> None:
        if self.callback is not None:
            self.callback(min(self.done / self.total, 1.0))
        self.done += 1

    def finish(self) -> None:
        if self.callback is not None:
            self.callback(1.0)


@dataclass
class _Parts:
    flow: torch.Tensor | None  # [k, n]: per predicting position, restricted to the prompt
    kl: torch.Tensor | None  # [k, n]
    hessian: torch.Tensor | None  # [n] ("sum"/"single") or [k, n] ("each")
    logprobs: list[float]
    hvps: int
    baseline: torch.Tensor | None = None  # [rows, n]: a baseline method's scores (HETA parts are None)


class Attributor:
    """HETA attributions for a Hugging Face decoder-only model, kept warm between calls.

    Not thread-safe: a call temporarily changes the model's attention implementation and parameter
    grad flags. Use one Attributor per thread or process.
    """

    def __init__(self, model: nn.Module, tokenizer: Any = None, config: HetaConfig | None = None, *, name: str | None = None):
        self.config = config or HetaConfig()
        self.adapter = adapter_for(model.config)
        dtype = compute_dtype(self.config.dtype, model.dtype)
        if dtype != model.dtype:
            model.to(dtype)  # an explicit upcast requested by HetaConfig.dtype
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.layout = HeadLayout.from_config(model.config)
        self.name = name or getattr(model.config, "_name_or_path", None) or type(model).__name__

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        config: HetaConfig | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> Attributor:
        """Load by HF id or local path (safetensors only, no remote code). ``dtype=None``: the checkpoint's."""
        from .loading import load_model

        model, tokenizer = load_model(name_or_path, device=device, dtype=dtype)
        return cls(model, tokenizer, config, name=name_or_path)

    @classmethod
    def planner(cls, name_or_path: str, config: HetaConfig | None = None, dtype: str | torch.dtype | None = None) -> Attributor:
        """An Attributor without weights (meta device): ``estimate`` and input validation work,
        ``attribute`` does not. For front ends that admit work they never compute."""
        from .loading import load_planner

        model, tokenizer = load_planner(name_or_path, dtype=dtype)
        return cls(model, tokenizer, config, name=name_or_path)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def num_layers(self) -> int:
        return len(self.adapter.blocks(self.model))

    # ------------------------------------------------------------------ inputs

    def _document(self, text, input_ids, messages) -> Document:
        given = [name for name, value in (("text", text), ("input_ids", input_ids), ("messages", messages)) if value is not None]
        if len(given) != 1:
            raise InputError("pass exactly one of text, input_ids or messages", code="invalid_input")
        if text is not None:
            return from_text(self.tokenizer, text)
        if messages is not None:
            return from_messages(self.tokenizer, messages)
        ids = self._check_ids(input_ids)
        return Document(ids, [None] * len(ids))

    def _check_ids(self, input_ids) -> list[int]:
        if isinstance(input_ids, torch.Tensor):
            if input_ids.dim() != 1 or input_ids.dtype.is_floating_point:
                raise InputError("input_ids must be a 1-D integer tensor", code="invalid_input_ids")
            input_ids = input_ids.tolist()
        if isinstance(input_ids, (str, bytes)) or not isinstance(input_ids, Iterable):
            raise InputError("input_ids must be a sequence of integers", code="invalid_input_ids")
        ids = list(input_ids)
        if not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in ids):
            raise InputError("input_ids must be a sequence of integers", code="invalid_input_ids")
        ids = [int(i) for i in ids]
        vocab = self.model.get_input_embeddings().num_embeddings
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise InputError(f"token id {bad[0]} is outside the vocabulary [0, {vocab})", code="invalid_input_ids")
        return ids

    @staticmethod
    def resolve_target(length: int, target_position: int | None) -> int:
        """The target index t (default: the last token); negative values count from the end."""
        if target_position is None:
            return length - 1
        if isinstance(target_position, bool) or not isinstance(target_position, numbers.Integral):
            raise InputError(f"target_position must be an integer, got {target_position!r}", code="target_out_of_range")
        target_position = int(target_position)
        position = target_position + length if target_position < 0 else target_position
        if not 1 <= position < length:
            raise InputError(
                f"target_position {target_position} is out of range: the input has {length} tokens and the target "
                f"needs at least one token before it (valid: 1..{length - 1} or -{length - 1}..-1)",
                code="target_out_of_range",
            )
        return position

    def _resolve(self, doc: Document, target_position, target_text, target_mode, generate, *, run_generation: bool) -> _Request:
        choices = [n for n, v in (("target_position", target_position), ("target_text", target_text), ("generate", generate)) if v is not None]
        if len(choices) > 1:
            raise InputError(f"pass at most one of {', '.join(choices)}", code="invalid_target")
        if target_mode not in TARGET_MODES:
            raise InputError(f"target_mode must be one of {', '.join(TARGET_MODES)}; got {target_mode!r}", code="invalid_target")
        if target_text is None and generate is None:
            if len(doc.ids) < 2:
                raise InputError(f"need at least 2 tokens (a context and a target), got {len(doc.ids)}", code="too_short")
            t = self.resolve_target(len(doc.ids), target_position)
            return _Request(doc.truncated(t + 1), t, "single")
        if not doc.ids:
            raise InputError("the prompt has no tokens", code="too_short")
        if target_text is not None:
            if not isinstance(target_text, str) or not target_text:
                raise InputError("target_text must be a non-empty string", code="empty_input")
            if self.tokenizer is None:
                raise InputError("target_text needs a tokenizer", code="no_tokenizer")
            shift = len(doc.text) if doc.text is not None else 0
            ids, offsets = encode_text(self.tokenizer, target_text, special_tokens=False, shift=shift)
            if not ids:
                raise InputError("target_text encodes to no tokens", code="empty_input")
            return _Request(doc.extended(ids, target_text, offsets), len(doc.ids), target_mode)
        if isinstance(generate, bool) or not isinstance(generate, numbers.Integral) or generate < 1:
            raise InputError(f"generate must be an integer >= 1, got {generate!r}", code="invalid_target")
        if not run_generation:  # estimate: assume the full length is generated
            return _Request(doc.extended([0] * int(generate), None, [None] * int(generate)), len(doc.ids), target_mode)
        ids = self._generate(doc.ids, int(generate))
        text, offsets = self._generated_text(doc, ids)
        return _Request(doc.extended(ids, text, offsets), len(doc.ids), target_mode)

    @torch.no_grad()
    def _generate(self, prompt: list[int], count: int) -> list[int]:
        """Greedy decoding of up to ``count`` tokens; stops after an end-of-sequence token (kept)."""
        eos = self.model.generation_config.eos_token_id if getattr(self.model, "generation_config", None) else None
        eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        ids = torch.tensor([prompt], device=self.device)
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        generated = []
        for _ in range(count):
            token = int(out.logits[0, -1].argmax())
            generated.append(token)
            if token in eos:
                break
            out = self.model(
                input_ids=torch.tensor([[token]], device=self.device), past_key_values=out.past_key_values,
                use_cache=True, logits_to_keep=1,
            )  # fmt: skip
        return generated

    def _generated_text(self, doc: Document, ids: list[int]):
        if self.tokenizer is None:
            return None, [None] * len(ids)
        base = len(doc.text) if doc.text is not None else 0
        offsets, previous = [], 0
        for j in range(len(ids)):
            length = len(self.tokenizer.decode(ids[: j + 1]))
            offsets.append((base + previous, base + length))
            previous = length
        return self.tokenizer.decode(ids), offsets

    def _check_config(self, cfg: HetaConfig, request: _Request) -> None:
        if compute_dtype(cfg.dtype, self.model.dtype) != self.model.dtype:
            raise ConfigError(
                f"dtype={cfg.dtype!r} differs from the loaded model's {self.model.dtype}; set it when creating the Attributor",
                field="dtype",
            )
        vocab = self.model.get_input_embeddings().num_embeddings
        if cfg.mask_token_id is not None and cfg.mask_token_id >= vocab:
            raise ConfigError(f"mask token id {cfg.mask_token_id} is outside the vocabulary [0, {vocab})", field="mask")
        if cfg.curvature_layers is not None and cfg.curvature_layers > self.num_layers:
            raise ConfigError(
                f"curvature_layers={cfg.curvature_layers} exceeds the model's {self.num_layers} blocks", field="curvature_layers"
            )
        fed = len(request.doc.ids) - 1
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and fed > limit:
            raise InputError(f"the input has {fed} positions; {self.name} reads at most {limit}", code="too_many_tokens")

    # ------------------------------------------------------------------ attribution

    def attribute(
        self,
        text: str | None = None,
        *,
        input_ids: Sequence[int] | torch.Tensor | None = None,
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
    ) -> AttributionResult:
        """Attribute a target (default: the input's last token) to every prompt token before it.

        Exactly one of ``text``, ``input_ids``, ``messages``. At most one of ``target_position``,
        ``target_text`` (a continuation appended to the prompt) and ``generate`` (greedy tokens).
        ``target_mode``: "sum" (one attribution of the span's total log-probability) or "each" (a row
        per target token). ``granularity``: "word" and/or "sentence" aggregates; ``spans``: caller
        character spans to aggregate over; chat input always gets per-message aggregates.
        ``progress(fraction)`` is called between batched chunks; raising from it aborts the call.
        """
        cfg = config or self.config
        doc = self._document(text, input_ids, messages)
        kinds = self._granularities(granularity)
        request = self._resolve(doc, target_position, target_text, target_mode, generate, run_generation=False)
        self._check_config(cfg, request)
        checked_spans = check_spans(spans, doc.text) if spans is not None else None
        if generate is not None:
            request = self._resolve(doc, None, None, target_mode, generate, run_generation=True)

        started = time.perf_counter()
        timings = {stage: 0.0 for stage in STAGES}
        tracker = _Progress(progress, self._plan(request, cfg)[2] if progress is not None else 1)
        with _inputs_only(self.model):
            if cfg.method == "heta":
                parts = self._windowed(request, cfg, timings, tracker)
            else:
                parts = self._baseline(request, cfg, timings, tracker)
        tracker.finish()
        timings["total"] = time.perf_counter() - started
        return self._result(request, cfg, parts, timings, kinds, checked_spans, include_template)

    def estimate(
        self,
        text: str | None = None,
        *,
        input_ids: Sequence[int] | torch.Tensor | None = None,
        messages: list[dict] | None = None,
        target_position: int | None = None,
        target_text: str | None = None,
        target_mode: str = "sum",
        generate: int | None = None,
        config: HetaConfig | None = None,
    ) -> Estimate:
        """Predicted HVPs, forward token positions and peak memory of ``attribute`` with the same
        arguments, without running the model (``generate=N`` is assumed to produce all N tokens).

        Uses the same chunk planner and memory model as the run itself, so the chunk part of the
        memory estimate is exactly what the budget allows.
        """
        cfg = config or self.config
        doc = self._document(text, input_ids, messages)
        request = self._resolve(doc, target_position, target_text, target_mode, generate, run_generation=False)
        self._check_config(cfg, request)
        hvps, tokens, _, peak = self._plan(request, cfg)
        tokens += request.targets if generate is not None else 0  # the generation itself
        weights = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return Estimate(request.scored, request.targets, hvps, tokens, weights + peak)

    def _plan(self, request: _Request, cfg: HetaConfig) -> tuple[int, int, int, int]:
        """(HVPs, forward token positions, chunks, trace + largest chunk bytes) of a run, from the
        same chunk planner the run uses."""
        model_config, dtype = self.model.config, self.model.dtype
        budget = budget_bytes(cfg.memory_budget_mb, self.device)
        if cfg.method != "heta":
            return self._baseline_plan(request, cfg, budget)
        kl_row = row_bytes_fn(model_config, self.layout, dtype)
        hvp_row = row_bytes_fn(model_config, self.layout, dtype, probes=cfg.num_hvp_samples)
        full_row = row_bytes_fn(model_config, self.layout, dtype, probes=1)
        reference = cfg.strategy == "reference"
        n, k = request.scored, request.targets
        windows = [n] if cfg.window is None or n <= cfg.window else None
        if windows is None:
            stride = max(1, round(cfg.window * (1 - cfg.overlap)))
            windows = [cfg.window] * len(set(list(range(0, n - cfg.window, stride)) + [n - cfg.window]))
        hvps = tokens = chunks = chunk_peak = trace_peak = 0
        for scored in windows:
            fed = scored + k - 1
            tokens += fed
            trace_peak = max(trace_peak, trace_bytes(model_config, self.layout, dtype, fed, k, cfg.flow == "official"))
            rows = [fed] if request.mode != "each" else [scored + j for j in range(k)]
            if reference:
                tokens += scored * fed  # one full forward per masked token
                chunks += 1
                chunk_peak = max(chunk_peak, full_row(fed))
            else:
                masked_tokens, masked_chunks, masked_peak = _masked_work(scored, fed, kl_row, budget)
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
                    chunk_peak = max(chunk_peak, (hi - lo) * hvp_row(length - lo))
        return hvps, tokens, chunks, trace_peak + chunk_peak

    def _baseline_plan(self, request: _Request, cfg: HetaConfig, budget: int) -> tuple[int, int, int, int]:
        """(0 HVPs, forward token positions, chunks, peak bytes) of a baseline method; mirrors
        :meth:`_baseline` (one trace forward, then the method's passes)."""
        model_config, dtype = self.model.config, self.model.dtype
        n, k = request.scored, request.targets
        fed = n + k - 1
        trace = trace_bytes(model_config, self.layout, dtype, fed, k, False)
        if cfg.method == "occlusion":  # the KL stage's masked forwards, every target at once
            tokens, chunks, peak = _masked_work(n, fed, row_bytes_fn(model_config, self.layout, dtype), budget)
            return 0, fed + tokens, chunks, trace + peak
        row = row_bytes_fn(model_config, self.layout, dtype, probes=1)
        lengths = [fed] if request.mode != "each" else [n + j for j in range(k)]
        tokens, chunks, peak = fed, 0, 0
        for length in lengths:
            batch = {"integrated_gradients": cfg.ig_steps, "attention_rollout": 0}.get(cfg.method, 1)
            per_chunk = max(1, budget // max(1, row(length)))
            tokens += batch * length
            chunks += max(1, -(-batch // per_chunk))  # the progress ticks of baseline_scores
            peak = max(peak, min(batch, per_chunk) * row(length))
        return 0, tokens, chunks, trace + peak

    def _baseline(self, request: _Request, cfg: HetaConfig, timings: dict, tracker: _Progress) -> _Parts:
        """A baseline method's scores (:mod:`heta_core.baselines`) for the same request shape."""
        ids, n, model = request.doc.ids, request.scored, self.model
        count = len(ids) - n
        embedding = model.get_input_embeddings()
        embeds = embedding(torch.tensor(ids[:-1], device=self.device)).detach()
        targets = torch.tensor(ids[n:], device=self.device)
        fill = mask_vector(embeds[:n], cfg.mask, embedding)
        budget = budget_bytes(cfg.memory_budget_mb, self.device)
        clock = time.perf_counter()
        occluding = cfg.method == "occlusion"
        with eager_attention(model):
            trace = run_trace(model, self.adapter, self.layout, embeds, predicting=count, keep_cache=occluding)
        if occluding:
            drops = occlusion(
                SuffixRunner(model, trace.kv), embeds, n, targets, fill=fill, base_logprobs=trace.logprobs,
                row_bytes=row_bytes_fn(model.config, self.layout, embeds.dtype), budget=budget,
                streams=StreamPool(self.device, cfg.cuda_streams, tracker.tick),
            ).cpu()  # fmt: skip
            # "each": row j is y_j's drop; otherwise g = Σ_j log P(y_j), so the drops add up
            scores = drops.T if request.mode == "each" else drops.sum(1)[None]
        else:
            rows = [(len(ids) - 1, targets)] if request.mode != "each" else [(n + j, targets[j : j + 1]) for j in range(count)]
            scores = baseline_scores(
                cfg.method, model, embeds, n, rows,
                fill=fill, steps=cfg.ig_steps, mean_attentions=trace.mean_attentions,
                row_bytes=row_bytes_fn(model.config, self.layout, embeds.dtype, probes=1), budget=budget, tick=tracker.tick,
            )  # fmt: skip
        timings[cfg.method] = time.perf_counter() - clock
        logprobs = [float(trace.logprobs[j, ids[n + j]]) for j in range(count)]
        return _Parts(None, None, None, logprobs, 0, baseline=scores.double())

    @staticmethod
    def _granularities(granularity) -> list[str]:
        if granularity is None:
            return []
        kinds = [granularity] if isinstance(granularity, str) else list(granularity)
        for kind in kinds:
            if kind not in GRANULARITIES:
                raise InputError(f"granularity must be one of {', '.join(GRANULARITIES)}; got {kind!r}", code="invalid_granularity")
        return [k for k in kinds if k != "token"]

    def _windowed(self, request: _Request, cfg: HetaConfig, timings: dict, tracker: _Progress) -> _Parts:
        """Exact, or the authors' windowing: each window of the prompt followed by the targets."""
        n = request.scored
        if cfg.window is None or n <= cfg.window:
            return self._compute(request.doc.ids, n, request.mode, cfg, timings, tracker)
        stride = max(1, round(cfg.window * (1 - cfg.overlap)))
        starts = list(range(0, n - cfg.window, stride)) + [n - cfg.window]
        targets = request.doc.ids[n:]
        total: _Parts | None = None
        counts = torch.zeros(n, dtype=torch.float64)
        for a in sorted(set(starts)):
            b = a + cfg.window
            window = self._compute(request.doc.ids[a:b] + targets, cfg.window, request.mode, cfg, timings, tracker)
            if total is None:
                shape = lambda t: (*t.shape[:-1], n)  # noqa: E731
                total = _Parts(
                    torch.zeros(shape(window.flow), dtype=torch.float64), torch.zeros(shape(window.kl), dtype=torch.float64),
                    torch.zeros(shape(window.hessian), dtype=torch.float64), window.logprobs, 0,
                )  # fmt: skip
            for name in ("flow", "kl", "hessian"):
                getattr(total, name)[..., a:b] += getattr(window, name)
            total.hvps += window.hvps
            counts[a:b] += 1
        for name in ("flow", "kl", "hessian"):
            setattr(total, name, getattr(total, name) / counts)
        total.flow = total.flow / total.flow.sum(-1, keepdim=True)  # M_T renormalised over the whole prompt
        return total

    def _curvature(self, cfg: HetaConfig) -> tuple[Curvature, nn.Module | None]:
        layer = self.num_layers - cfg.curvature_layers if cfg.curvature_layers is not None else None
        block = self.adapter.blocks(self.model)[layer] if layer is not None else None
        return Curvature(kind=cfg.curvature, layer=layer, low_rank=cfg.low_rank), block

    def _compute(self, ids: list[int], n: int, mode: str, cfg: HetaConfig, timings: dict, tracker: _Progress) -> _Parts:
        """Flow, KL and S for prompt ``ids[:n]`` and targets ``ids[n:]`` (float64 CPU tensors)."""
        model, device = self.model, self.device
        reference = cfg.strategy == "reference"
        count = len(ids) - n
        fed = torch.tensor(ids[:-1], device=device)
        targets = torch.tensor(ids[n:], device=device)
        embedding = model.get_input_embeddings()
        embeds = embedding(fed).detach()
        budget = budget_bytes(cfg.memory_budget_mb, device)
        curvature, block = self._curvature(cfg)

        clock = time.perf_counter()
        with eager_attention(model):
            trace = run_trace(
                model, self.adapter, self.layout, embeds, predicting=count, keep_cache=True, full_logits=reference,
                full_attention=cfg.flow == "official",
                block_input_layers=(curvature.layer,) if curvature.layer is not None else (),
            )  # fmt: skip
            blocks = [self.adapter.attention(b) for b in self.adapter.blocks(model)]
            norms = layer_value_norms(blocks, self.adapter, self.layout, trace, mode=cfg.flow)
            flow = semantic_flow(trace, norms, mode=cfg.flow, reference=reference)[:, :n].cpu()
        logprobs = [float(trace.logprobs[j, ids[n + j]]) for j in range(count)]
        timings["flow"] += time.perf_counter() - clock

        source = embeds if curvature.layer is None else trace.block_inputs[curvature.layer]
        fill = mask_vector(embeds[:n], cfg.mask, embedding)
        runner = SuffixRunner(model, trace.kv)
        # "each": row j is an independent attribution of y_j from the prompt and y_<j
        rows = [(len(ids) - 1, targets)] if mode != "each" else [(n + j, targets[j : j + 1]) for j in range(count)]
        hessians, hvps = [], 0
        if reference:
            tracker.tick()
            clock = time.perf_counter()
            kl = information_reference(model, embeds, trace.logprobs, fill, n)
            timings["kl"] += time.perf_counter() - clock
            clock = time.perf_counter()
            with eager_attention(model):
                for length, row_targets in rows:
                    hessian, used = self._sensitivity(runner, embeds[:length], source[:length], row_targets, n, cfg, curvature, block, budget, None)
                    hessians.append(hessian)
                    hvps += used
            timings["hessian"] += time.perf_counter() - clock
        else:
            kl_streams = StreamPool(device, cfg.cuda_streams, tracker.tick)
            hvp_streams = StreamPool(device, cfg.cuda_streams, tracker.tick)
            kl = information(
                runner, embeds, trace.logprobs, fill, n,
                row_bytes=row_bytes_fn(model.config, self.layout, embeds.dtype), budget_bytes=budget, streams=kl_streams,
            )  # fmt: skip
            with eager_attention(model):
                for length, row_targets in rows:
                    hessian, used = self._sensitivity(
                        runner, embeds[:length], source[:length], row_targets, n, cfg, curvature, block, budget, hvp_streams
                    )
                    hessians.append(hessian)
                    hvps += used
            kl_streams.join()
            hvp_streams.join()
            timings["kl"] += kl_streams.seconds
            timings["hessian"] += hvp_streams.seconds
        hessian = torch.stack([h.cpu() for h in hessians])
        return _Parts(
            flow=flow.double(),
            kl=kl.cpu().double().T,
            hessian=(hessian if mode == "each" else hessian[0]).double(),
            logprobs=logprobs,
            hvps=hvps,
        )

    def _sensitivity(self, runner, embeds, source, targets, n, cfg, curvature, block, budget, streams):
        row_bytes = row_bytes_fn(self.model.config, self.layout, embeds.dtype, probes=cfg.num_hvp_samples)
        if curvature.low_rank is not None:
            full_row = row_bytes_fn(self.model.config, self.layout, embeds.dtype, probes=1)
            return low_rank_sensitivity(
                runner, embeds, source, targets, n, cfg.num_hvp_samples, cfg.seed, curvature, block,
                row_bytes=full_row, budget_bytes=budget, streams=streams,
            )  # fmt: skip
        if streams is None:
            scores = sensitivity_reference(self.model, embeds, source, targets, n, cfg.num_hvp_samples, cfg.seed, curvature, block)
            return scores, n * cfg.num_hvp_samples
        return sensitivity(
            runner, embeds, source, targets, n, cfg.num_hvp_samples, cfg.seed, curvature, block,
            row_bytes=row_bytes, budget_bytes=budget, streams=streams,
        )  # fmt: skip

    # ------------------------------------------------------------------ result

    def _token_text(self, token_id: int) -> str | None:
        return self.tokenizer.decode([token_id]) if self.tokenizer is not None else None

    def _token(self, doc: Document, i: int) -> TokenInfo:
        start, end = doc.offsets[i] if doc.offsets[i] is not None else (None, None)
        text = doc.text[start:end] if doc.text is not None and start is not None and end > start else self._token_text(doc.ids[i])
        return TokenInfo(
            i, doc.ids[i], text, start, end,
            role=doc.roles[i], message=doc.messages[i], template=doc.template[i], special=doc.special[i],
        )  # fmt: skip

    def _result(self, request: _Request, cfg: HetaConfig, parts: _Parts, timings, kinds, spans, include_template) -> AttributionResult:
        n, doc = request.scored, request.doc
        if parts.baseline is not None:
            # aggregates sum exactly the float32 values the result reports
            values = {"score": (parts.baseline if request.mode == "each" else parts.baseline[0]).float()}
        else:
            if request.mode == "each":
                flow, kl = parts.flow, parts.kl
            else:
                flow = parts.flow.mean(0)
                flow = flow / flow.sum()
                kl = parts.kl.sum(0)
            scores = combine(flow, parts.hessian, kl, beta=cfg.beta, gamma=cfg.gamma, normalize=cfg.normalize)
            values = {"score": scores.float(), "flow": flow.float(), "hessian": parts.hessian.float(), "kl": kl.float()}
        targets = [
            TargetInfo(n + j, doc.ids[n + j], self._token(doc, n + j).text, logprob, *(doc.offsets[n + j] or (None, None)))
            for j, logprob in enumerate(parts.logprobs)
        ]
        aggregates = {kind: aggregate(segments(doc, n, kind, include_template=include_template), values) for kind in kinds}
        if spans is not None:
            aggregates["span"] = aggregate(segments(doc, n, "span", include_template=include_template, spans=spans), values)
        if doc.message_roles:
            messages = aggregate(segments(doc, n, "message", include_template=include_template), values)
            for row, role in zip(messages, doc.message_roles):
                row["role"] = role
            aggregates["message"] = messages
        return AttributionResult(
            scores=values["score"],
            flow=values.get("flow"),
            hessian=values.get("hessian"),
            kl=values.get("kl"),
            method=cfg.method,
            tokens=[self._token(doc, i) for i in range(n)],
            targets=targets,
            target_mode=request.mode,
            text=doc.text,
            aggregates=aggregates,
            timings=timings,
            meta=self._meta(cfg, parts.hvps),
        )

    def _meta(self, cfg: HetaConfig, hvps: int) -> dict[str, Any]:
        model_config = self.model.config
        return {
            "model": self.name,
            "revision": getattr(model_config, "_commit_hash", None),
            "model_type": model_config.model_type,
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "device": str(self.device),
            "method": cfg.method,
            "seed": cfg.seed,
            "num_hvp_samples": cfg.num_hvp_samples,
            "hvps": hvps,
            "strategy": cfg.strategy,
            "config": cfg.to_dict(),
            "versions": {
                "heta": _version("heta"),
                "torch": torch.__version__,
                "transformers": _version("transformers"),
                "python": platform.python_version(),
            },
        }
