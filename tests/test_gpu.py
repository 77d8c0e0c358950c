"""CUDA-only properties, collected only when HETA_TEST_DEVICE is a CUDA device (`scripts/gpu-check`):
CI on CPU deselects them instead of skipping (see tests/conftest.py)."""

import pytest
import torch

from heta_core import Attributor, HetaConfig
from heta_core.methods.heta.hessian import Curvature
from heta_core.methods.heta.hessian_chunks import sensitivity
from heta_core.methods.heta.kl import information
from heta_core.runtime.cost import row_bytes_fn
from heta_core.runtime.masking import mask_vector
from heta_core.runtime.prefix import StreamPool

from .conftest import TEXT
from .test_device import _stages

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
def test_no_host_synchronisation_inside_the_chunk_loops(tiny, dtype):
    """Both stages issue every chunk without waiting for the GPU (sync debug mode "error" turns any
    synchronising call into an exception), on two streams each, and give the synchronous numbers."""
    model = tiny("llama").to(dtype).requires_grad_(False)
    ids = [5, 9, 14, 20, 7, 30, 11, 3, 17, 22, 8, 12, 40]
    layout, embeds, targets, trace, runner, budget = _stages(model, ids, budget_mb=16)
    n, samples = len(ids) - 1, 3
    fill = mask_vector(embeds, "zero", model.get_input_embeddings())
    kl_row = row_bytes_fn(model.config, layout, dtype)
    hvp_row = row_bytes_fn(model.config, layout, dtype, probes=samples)

    def stages(pools):
        from heta_core.models.adapters import eager_attention

        kl = information(
            runner, embeds, trace.logprobs, fill, n, row_bytes=kl_row, budget_bytes=budget, streams=pools[0]
        )
        with eager_attention(model):
            s, _ = sensitivity(
                runner,
                embeds,
                embeds,
                targets,
                n,
                samples,
                0,
                Curvature(),
                None,
                row_bytes=hvp_row,
                budget_bytes=budget,
                streams=pools[1],
            )
        return kl, s

    expected = [t.cpu() for t in stages([StreamPool(embeds.device, 1), StreamPool(embeds.device, 1)])]
    torch.cuda.synchronize()
    pools = [StreamPool(embeds.device, 2), StreamPool(embeds.device, 2)]
    torch.cuda.set_sync_debug_mode("error")
    try:
        kl, s = stages(pools)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    for pool in pools:
        pool.join()
    torch.testing.assert_close(kl.cpu(), expected[0], rtol=1e-6, atol=0)
    torch.testing.assert_close(s.cpu(), expected[1], rtol=1e-6, atol=0)


def test_results_are_copied_through_pinned_memory_and_cuda_equals_cpu(tokenizer, tiny):
    """A float64 model on CUDA gives the CPU's numbers (the engine's copies to the host go through pinned buffers)."""
    config = HetaConfig(num_hvp_samples=3, seed=2)
    cuda = Attributor(tiny("gpt2"), tokenizer, config).attribute(TEXT)
    cpu = Attributor(tiny("gpt2").cpu(), tokenizer, config).attribute(TEXT)
    for name in ("scores", "flow", "hessian", "kl"):
        torch.testing.assert_close(getattr(cuda, name), getattr(cpu, name), rtol=1e-6, atol=1e-9)
    assert cuda.meta.device.startswith("cuda")
