"""``Attributor``: HETA attributions for one warm model.

Pipeline for a context x_0..x_{t-1} and target x_t (HETA.md):
  1. trace   — one eager forward: attention probabilities, value vectors, log P(·|X) at p, KV cache
  2. flow    — M_T from the trace (:mod:`heta_core.flow`)
  3. kl      — I_i from masked forwards (:mod:`heta_core.kl`)
  4. hessian — S_i from block HVPs (:mod:`heta_core.hessian`)
  5. combine — Eq. 5 (:mod:`heta_core.combine`)
``strategy="reference"`` runs 3 and 4 as literal per-token loops over full sequences; ``"fast"``
batches them after the cached prefix. Both draw identical probes, so they agree to rounding.
"""

from __future__ import annotations

import contextlib
import numbers
import platform
import time
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import nn

from .adapters import HeadLayout, adapter_for, eager_attention
from .batching import StreamPool, SuffixRunner
from .combine import combine
from .config import HetaConfig
from .cost import budget_bytes, row_bytes_fn
from .errors import ConfigError, InputError
from .flow import layer_value_norms, semantic_flow
from .hessian import sensitivity, sensitivity_reference
from .kl import information, information_reference, mask_vector
from .precision import compute_dtype
from .result import AttributionResult, TargetInfo, TokenInfo
from .trace import run_trace


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


class Attributor:
    """HETA attributions for a Hugging Face decoder-only model (kept warm between calls)."""

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

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ inputs

    def encode(self, text: str | None, input_ids: Sequence[int] | torch.Tensor | None):
        """(ids, char offsets or None) for exactly one of text / input_ids."""
        if (text is None) == (input_ids is None):
            raise InputError("pass exactly one of text or input_ids", code="invalid_input")
        if text is not None:
            if not isinstance(text, str):
                raise InputError(f"text must be a string, got {type(text).__name__}")
            if self.tokenizer is None:
                raise InputError("text input needs a tokenizer; pass input_ids instead", code="no_tokenizer")
            if not text.strip():
                raise InputError("text is empty", code="empty_input")
            try:
                encoded = self.tokenizer(text, return_offsets_mapping=True)
                offsets = [tuple(o) for o in encoded["offset_mapping"]]
            except (NotImplementedError, ValueError, KeyError):  # slow tokenizers have no offsets
                encoded, offsets = self.tokenizer(text), None
            ids = list(encoded["input_ids"])
        else:
            ids = self._check_ids(input_ids)
            offsets = None
        if len(ids) < 2:
            raise InputError(
                f"need at least 2 tokens (a context and a target), got {len(ids)}", code="too_short"
            )
        return ids, offsets

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

    def _token_text(self, token_id: int) -> str | None:
        return self.tokenizer.decode([token_id]) if self.tokenizer is not None else None

    # ------------------------------------------------------------------ attribution

    def attribute(
        self,
        text: str | None = None,
        *,
        input_ids: Sequence[int] | torch.Tensor | None = None,
        target_position: int | None = None,
        config: HetaConfig | None = None,
    ) -> AttributionResult:
        """Attribute the token at ``target_position`` (default: last) to every position before it."""
        cfg = config or self.config
        if compute_dtype(cfg.dtype, self.model.dtype) != self.model.dtype:
            raise ConfigError(
                f"dtype={cfg.dtype!r} differs from the loaded model's {self.model.dtype}; set it when creating the Attributor",
                field="dtype",
            )
        ids, offsets = self.encode(text, input_ids)
        t = self.resolve_target(len(ids), target_position)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and t > limit:
            raise InputError(
                f"the context has {t} tokens; {self.name} reads at most {limit} positions", code="too_long"
            )
        vocab = self.model.get_input_embeddings().num_embeddings
        if cfg.mask_token_id is not None and cfg.mask_token_id >= vocab:
            raise ConfigError(f"mask token id {cfg.mask_token_id} is outside the vocabulary [0, {vocab})", field="mask")

        started = time.perf_counter()
        with _inputs_only(self.model):
            scores, parts, timings, hvps = self._run(ids[:t], ids[t], cfg)
        timings["total"] = time.perf_counter() - started

        tokens = [
            TokenInfo(i, ids[i], self._token_text(ids[i]), *(offsets[i] if offsets else (None, None))) for i in range(t)
        ]
        target = TargetInfo(t, ids[t], self._token_text(ids[t]), parts.pop("logprob"))
        return AttributionResult(
            scores=scores, tokens=tokens, target=target, timings=timings, meta=self._meta(cfg, hvps), **parts
        )

    def _run(self, context: list[int], target_id: int, cfg: HetaConfig):
        model, device = self.model, self.device
        reference = cfg.strategy == "reference"
        timings: dict[str, float] = {}
        embedding = model.get_input_embeddings()
        embeds = embedding(torch.tensor(context, device=device)).detach()
        budget = budget_bytes(cfg.memory_budget_mb, device)

        clock = time.perf_counter()
        with eager_attention(model):
            trace = run_trace(model, self.adapter, self.layout, embeds, keep_cache=not reference, full_logits=reference)
            blocks = [self.adapter.attention(b) for b in self.adapter.blocks(model)]
            norms = layer_value_norms(blocks, self.adapter, self.layout, trace, mode=cfg.flow)
            flow = semantic_flow(trace, norms, mode=cfg.flow, reference=reference)
        logprob = float(trace.logprobs[target_id])
        timings["flow"] = time.perf_counter() - clock

        fill = mask_vector(embeds, cfg.mask, embedding)
        if reference:
            clock = time.perf_counter()
            kl = information_reference(model, embeds, trace.logprobs, fill)
            timings["kl"] = time.perf_counter() - clock
            clock = time.perf_counter()
            with eager_attention(model):
                hessian = sensitivity_reference(model, embeds, target_id, cfg.num_hvp_samples, cfg.seed)
            timings["hessian"] = time.perf_counter() - clock
        else:
            runner = SuffixRunner(model, trace.kv)
            kl_streams = StreamPool(device, cfg.cuda_streams)
            hvp_streams = StreamPool(device, cfg.cuda_streams)
            kl = information(
                runner, embeds, trace.logprobs, fill,
                row_bytes=row_bytes_fn(model.config, self.layout, embeds.dtype),
                budget_bytes=budget, streams=kl_streams,
            )  # fmt: skip
            with eager_attention(model):
                hessian, _ = sensitivity(
                    runner, embeds, target_id, cfg.num_hvp_samples, cfg.seed,
                    row_bytes=row_bytes_fn(model.config, self.layout, embeds.dtype, probes=cfg.num_hvp_samples),
                    budget_bytes=budget, streams=hvp_streams,
                )  # fmt: skip
            kl_streams.join()
            hvp_streams.join()
            kl, hessian = kl.cpu(), hessian.cpu()
            timings["kl"], timings["hessian"] = kl_streams.seconds, hvp_streams.seconds

        flow = flow.cpu()
        scores = combine(flow, hessian.to(flow.dtype), kl.to(flow.dtype), beta=cfg.beta, gamma=cfg.gamma, normalize=cfg.normalize)
        parts = {
            "flow": flow.float(),
            "hessian": hessian.float(),
            "kl": kl.float(),
            "logprob": logprob,
        }
        return scores.float(), parts, timings, len(context) * cfg.num_hvp_samples

    def _meta(self, cfg: HetaConfig, hvps: int) -> dict[str, Any]:
        model_config = self.model.config
        return {
            "model": self.name,
            "revision": getattr(model_config, "_commit_hash", None),
            "model_type": model_config.model_type,
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "device": str(self.device),
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
