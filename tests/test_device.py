"""Half precision, float32 accumulators, host copies and the injected out-of-memory seam, on the
test device (CPU in CI; `scripts/gpu-check` reruns them with HETA_TEST_DEVICE=cuda)."""

import pytest
import torch

from heta_core import Attributor, HetaConfig
from heta_core.methods.heta.hessian import Curvature, block_products, probes
from heta_core.methods.heta.hessian_chunks import sensitivity
from heta_core.methods.heta.kl import information
from heta_core.models.adapters import HeadLayout, adapter_for, eager_attention
from heta_core.models.toymodels import tiny_model
from heta_core.runtime import faults
from heta_core.runtime.cost import row_bytes_fn
from heta_core.runtime.masking import mask_vector
from heta_core.runtime.prefix import StreamPool, SuffixRunner, plan_chunks, to_host
from heta_core.runtime.trace import run_trace

from .conftest import TEXT

HALF = [torch.bfloat16, torch.float16]


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_half_precision_models_run_and_rank_like_float64(tokenizer, device, family, dtype):
    """Smoke: a bf16/fp16 model gives finite float32 terms that rank tokens like the same weights in float64."""
    config = HetaConfig(num_hvp_samples=4, seed=3)
    exact = Attributor(tiny_model(family, dtype=torch.float64).to(device), tokenizer, config).attribute(TEXT)
    half = Attributor(tiny_model(family, dtype=torch.float64).to(device, dtype), tokenizer, config).attribute(TEXT)
    assert half.meta.dtype == str(dtype).removeprefix("torch.")
    for name in ("scores", "flow", "hessian", "kl"):
        values = getattr(half, name)
        assert values.dtype == torch.float32 and bool(torch.isfinite(values).all()), name
        assert _spearman(values, getattr(exact, name)) > 0.8, (name, _spearman(values, getattr(exact, name)))
    assert float(half.kl.min()) >= 0 and float(half.hessian.min()) > 0
    # the KL term is a float32 sum over the vocabulary: it stays within a few % of float64
    torch.testing.assert_close(half.kl, exact.kl, rtol=0.15, atol=0.02 * float(exact.kl.max()))


def _stages(model, ids, budget_mb=16):
    """The KL and Hessian stages exactly as the pipeline sets them up, for the first tokens of ``ids``."""
    handle_layout = HeadLayout.from_config(model.config)
    embeds = model.get_input_embeddings()(torch.tensor(ids[:-1], device=model.device)).detach()
    targets = torch.tensor(ids[-1:], device=model.device)
    with eager_attention(model):
        trace = run_trace(model, adapter_for(model.config), handle_layout, embeds, keep_cache=True)
    runner = SuffixRunner(model, trace.kv)
    return handle_layout, embeds, targets, trace, runner, budget_mb * 2**20


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_kl_and_s_accumulate_in_float32_for_half_models(device, dtype):
    """I and S of a bf16/fp16 model come back in float32, and S sums |H r| over d in float32: it equals
    the float32 sum of the very products the half-precision model computed, to float32 rounding."""
    model = tiny_model("llama", dtype=torch.float64).to(device, dtype).requires_grad_(False)
    ids = [5, 9, 14, 20, 7, 30, 11, 3, 17]
    layout, embeds, targets, trace, runner, budget = _stages(model, ids)
    n, samples, seed = len(ids) - 1, 3, 4
    assert trace.logprobs.dtype == torch.float32
    fill = mask_vector(embeds, "zero", model.get_input_embeddings())
    kl = information(
        runner,
        embeds,
        trace.logprobs,
        fill,
        n,
        row_bytes=row_bytes_fn(model.config, layout, dtype),
        budget_bytes=budget,
        streams=StreamPool(embeds.device, 1),
    )
    assert kl.dtype == torch.float32 and kl.shape == (n, 1)
    hvp_row = row_bytes_fn(model.config, layout, dtype, probes=samples)
    with eager_attention(model):
        scores, count = sensitivity(
            runner,
            embeds,
            embeds,
            targets,
            n,
            samples,
            seed,
            Curvature(),
            None,
            row_bytes=hvp_row,
            budget_bytes=budget,
            streams=StreamPool(embeds.device, 1),
        )
        expected = []
        index = torch.arange(n, device=embeds.device)
        draws = torch.stack([probes(seed, i, samples, embeds.shape[1]) for i in range(n)], 1).to(embeds.device, dtype)
        for lo, hi in plan_chunks(list(range(n)), n, hvp_row, budget):
            products = block_products(
                lambda rows, lo=lo: runner.logits(lo, rows, 1),
                embeds,
                embeds,
                targets,
                lo,
                index[lo:hi],
                draws[:, lo:hi],
                Curvature(),
                None,
            )
            assert products.dtype == dtype
            expected.append(products.float().abs().sum(-1).mean(0))
    assert scores.dtype == torch.float32 and count == n * samples
    # summing in the model's dtype instead differs by ~1e-3 relative; float32 order effects are ~1e-7
    torch.testing.assert_close(scores, torch.cat(expected), rtol=1e-6, atol=0)


def test_results_reach_the_host_in_one_copy(device):
    """to_host: CPU tensors with the device's values (pinned buffers on CUDA)."""
    tensors = [
        torch.arange(6, dtype=torch.float32, device=device).view(2, 3),
        torch.ones(4, dtype=torch.float64, device=device),
    ]
    copied = to_host(tensors)
    for original, host in zip(tensors, copied, strict=True):
        assert host.device.type == "cpu" and host.dtype == original.dtype
        torch.testing.assert_close(host, original.cpu(), rtol=0, atol=0)
        assert host.is_pinned() == (device.type == "cuda")


def test_injected_allocation_failure_leaves_the_attributor_usable(make_attributor, monkeypatch):
    """The seam the worker's out-of-memory tests use: the N next chunks raise CUDA's OOM error (also on
    CPU), the call unwinds cleanly (attention implementation, grad flags) and the next call works."""
    attributor = make_attributor("gpt2", num_hvp_samples=2)
    before = attributor.attribute(TEXT)
    implementation = attributor.model.config._attn_implementation
    attributor.model.requires_grad_(True)
    monkeypatch.setattr(faults, "_remaining", 2)
    for _ in range(2):
        with pytest.raises(torch.cuda.OutOfMemoryError, match="injected"):
            attributor.attribute(TEXT)
    assert attributor.model.config._attn_implementation == implementation
    assert all(p.requires_grad for p in attributor.model.parameters())
    after = attributor.attribute(TEXT)
    torch.testing.assert_close(after.scores, before.scores, rtol=0, atol=0)
    assert faults._remaining == 0
