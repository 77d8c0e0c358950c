"""Static shapes for CUDA graphs (``cuda_graphs=True``): the bucketed HVP chunks give the prefix path's
numbers (float64, every family and curvature variant; on CPU in CI, replayed from captured graphs when
`scripts/gpu-check` reruns this file with HETA_TEST_DEVICE=cuda), the planner mirrors their layout, and
the graph cache captures, replays and falls back as documented (the CUDA-only checks are marked gpu)."""

import itertools

import pytest
import torch

from heta_core import Attributor, ConfigError, HetaConfig
from heta_core.methods.heta.hessian_static import static_layout
from heta_core.methods.heta.window import Window
from heta_core.models.handle import ModelHandle
from heta_core.models.toymodels import TINY_CONFIGS
from heta_core.runtime.cost import row_bytes_fn
from heta_core.runtime.graphs import WARMUP, StaticGraphs, bucket, bucket_length, graphs_for, ladder
from heta_core.runtime.prefix import plan_chunks

from .conftest import TEXT

IDS = [5, 9, 14, 20, 7, 30, 11, 3, 17, 22, 8, 12, 40, 6, 19, 25, 2, 33, 10, 28, 4]


def test_buckets_pad_by_less_than_half_with_two_shapes_per_doubling():
    assert list(itertools.islice(ladder(), 12)) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]
    for count in range(1, 5000):
        size = bucket(count)
        assert count <= size < 1.5 * count or count == size
        length = bucket_length(count)
        assert length == 16 if count <= 16 else count <= length < 1.5 * count
    assert len({bucket_length(n) for n in range(1, 2049)}) == 15  # 16, 24, ..., 2048
    # capped at the model's positions (GPT-2: 1,024), never below the tokens
    assert bucket_length(1000, limit=1024) == 1024 and bucket_length(1030, limit=1030) == 1030


@pytest.mark.parametrize("budget_mb", [16, 512, 10**6])
def test_the_layout_fits_the_budget_and_covers_every_token(budget_mb):
    config = TINY_CONFIGS["llama"]()
    handle_layout = ModelHandle.wrap(_model("llama")).layout
    row = row_bytes_fn(config, handle_layout, torch.float64, probes=10)
    for scored in (1, 7, 12, 13, 36, 100):
        rows, padded, count = static_layout(scored, scored + 1, 128, row, budget_mb * 2**20)
        assert rows in list(itertools.islice(ladder(), 40)) and rows <= bucket(scored)
        assert rows == 1 or rows * row(padded, padded) <= budget_mb * 2**20
        assert (count - 1) * rows < scored <= count * rows and padded == bucket_length(scored + 1, 128)


def _model(family, device="cpu"):
    from heta_core.models.toymodels import tiny_model

    return tiny_model(family, dtype=torch.float64).to(device)


def _terms(handle, cfg, ids=IDS, targets=1, mode="sum", foil=None):
    """S of one window, every work item run: [rows, n] float64, and the items."""
    window = Window(handle, ids, len(ids) - targets, mode, cfg, foil)
    window.flow()
    items = window.hessian_work(2**20 * (cfg.memory_budget_mb or 512), 0)
    outputs = [item.run() for item in items]
    rows = {}
    for item, output in zip(items, outputs, strict=True):
        rows.setdefault(item.slot, []).append(output)
    return torch.stack([torch.cat(rows[key]) for key in sorted(rows)]).double().cpu(), items


# GPT-2 computes in pure float64. The others pass parts of a float64 model through float32 (rotary
# angles, Llama-family RMSNorm, GPT-J's and GPT-NeoX's attention scores: see test_packing), and a padded
# row's longer vectors round differently there: float32 precision bounds their agreement
TOLERANCE = {"gpt2": 1e-10}


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
@pytest.mark.parametrize("budget_mb", [16, 512])
def test_static_chunks_equal_the_prefix_path_on_every_family(tiny, family, budget_mb):
    handle = ModelHandle.wrap(tiny(family, dtype=torch.float64))
    expected, _ = _terms(handle, HetaConfig(num_hvp_samples=3, memory_budget_mb=budget_mb))
    actual, items = _terms(handle, HetaConfig(num_hvp_samples=3, memory_budget_mb=budget_mb, cuda_graphs=True))
    torch.testing.assert_close(actual, expected, rtol=TOLERANCE.get(family, 1e-6), atol=0)
    assert float(expected.min()) > 0
    assert len({(item.directions.shape, item.length) for item in items}) == 1  # one shape for every chunk


@pytest.mark.parametrize(
    "options, targets, mode, foil",
    [
        ({"curvature_layers": 1}, 1, "sum", None),  # the leaf is a block's input
        ({"curvature": "ggn"}, 1, "sum", None),
        ({}, 1, "sum", 4),  # contrastive: log p(y) − log p(foil)
        ({}, 3, "sum", None),  # a span: three predicting positions read by index
        ({}, 3, "each", None),  # one row per target, each its own context length
    ],
)
def test_static_chunks_equal_the_prefix_path_for_every_curvature(tiny, options, targets, mode, foil):
    handle = ModelHandle.wrap(tiny("gpt2", dtype=torch.float64))
    cfg = HetaConfig(num_hvp_samples=2, memory_budget_mb=16, **options)
    expected, _ = _terms(handle, cfg, targets=targets, mode=mode, foil=foil)
    actual, _ = _terms(handle, cfg.replace(cuda_graphs=True), targets=targets, mode=mode, foil=foil)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=0)
    assert actual.shape[0] == (targets if mode == "each" else 1)


def test_attributions_with_cuda_graphs_equal_the_default_and_the_plan_mirrors_the_run(make_attributor):
    attributor = make_attributor("llama", num_hvp_samples=3)
    plain = attributor.attribute(TEXT)
    graphs = attributor.attribute(TEXT, config=HetaConfig(num_hvp_samples=3, cuda_graphs=True))
    for name in ("scores", "hessian", "kl", "flow"):
        torch.testing.assert_close(getattr(graphs, name), getattr(plain, name), rtol=1e-6, atol=0)
    assert graphs.meta.hvps == plain.meta.hvps
    # the planner counts the padded rows the static chunks run: more forward tokens than the prefix path
    handle = attributor.handle
    scored = len(plain.scores)
    row = row_bytes_fn(handle.config, handle.layout, torch.float64, probes=3)
    rows, padded, count = static_layout(scored, scored, handle.max_positions, row, 512 * 2**20)
    estimate = attributor.estimate(TEXT, config=HetaConfig(num_hvp_samples=3, cuda_graphs=True))
    baseline = attributor.estimate(TEXT, config=HetaConfig(num_hvp_samples=3))
    prefix = plan_chunks(list(range(scored)), scored, row, 512 * 2**20)
    assert estimate.forward_tokens - baseline.forward_tokens == count * rows * padded - sum(
        (hi - lo) * (scored - lo) for lo, hi in prefix
    )


def test_on_a_cpu_every_call_runs_eagerly(tokenizer):
    attributor = Attributor(_model("gpt2"), tokenizer, HetaConfig(num_hvp_samples=2, memory_budget_mb=16))
    for _ in range(2):
        attributor.attribute(TEXT, config=attributor.config.replace(cuda_graphs=True))
    cache = graphs_for(attributor.model)
    assert cache.stats["eager"] > WARMUP + 1  # more chunks of one shape than the warm-up, and none captured
    assert cache.stats["captured"] == cache.stats["replayed"] == 0 and not cache.graphs


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_cuda_graphs_must_be_a_boolean(value):
    with pytest.raises(ConfigError) as error:
        HetaConfig(cuda_graphs=value)
    assert error.value.field == "cuda_graphs" and "true or false" in str(error.value)


@pytest.mark.gpu
def test_a_captured_graph_replays_the_eager_numbers_without_host_synchronisation(tiny):
    """Capture after the warm-up, then replays (sync debug mode "error" turns any synchronising call
    into an exception) that equal the eager chunks to rounding."""
    handle = ModelHandle.wrap(tiny("llama", dtype=torch.float64))
    cfg = HetaConfig(num_hvp_samples=3, memory_budget_mb=16)
    expected, _ = _terms(handle, cfg)
    cache = graphs_for(handle.model)
    window = Window(handle, IDS, len(IDS) - 1, "sum", cfg.replace(cuda_graphs=True), None)
    window.flow()
    items = window.hessian_work(16 * 2**20, 0)
    assert len(items) > WARMUP + 1
    outputs = [item.run() for item in items[: WARMUP + 1]]  # eager, eager, capture + replay
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        outputs += [item.run() for item in items[WARMUP + 1 :]]
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.testing.assert_close(torch.cat(outputs)[None].double().cpu(), expected, rtol=1e-10, atol=0)
    assert cache.stats["captured"] >= 1 and cache.stats["replayed"] >= len(items) - WARMUP
    assert not cache.failed


@pytest.mark.gpu
def test_a_computation_that_cannot_be_captured_runs_eagerly():
    cache = StaticGraphs()
    value = torch.arange(4.0, device="cuda")

    def synchronising(inputs):
        return inputs["x"] * float(inputs["x"].sum().item())  # .item() waits for the device: not capturable

    outputs = [cache.run("k", {"x": value}, synchronising) for _ in range(WARMUP + 2)]
    assert all(torch.equal(out, value * 6) for out in outputs)
    assert cache.stats["failed"] == 1 and "k" in cache.failed and not cache.graphs
    assert cache.stats["eager"] == WARMUP + 2


def test_the_attributor_with_cuda_graphs_runs_through_the_public_api(tokenizer, device):
    attributor = Attributor(_model("gpt2", device), tokenizer, HetaConfig(num_hvp_samples=2, cuda_graphs=True))
    result = attributor.attribute(TEXT)
    assert result.meta.hvps == 2 * len(result.scores) and float(result.hessian.min()) > 0


def test_jobs_batched_together_run_their_static_chunks_alone_with_the_same_numbers(make_attributor):
    """attribute_many (the worker's HETA_BATCH_JOBS) with cuda_graphs: the masked forwards are packed, the
    fixed-shape Hessian chunks run one by one, and every result equals its solo run without the switch."""
    attributor = make_attributor("gpt2", num_hvp_samples=2)
    prompts = [{"text": TEXT}, {"text": TEXT, "target_position": 5}]
    graphs = HetaConfig(num_hvp_samples=2, cuda_graphs=True)
    together = attributor.attribute_many([{**prompt, "config": graphs} for prompt in prompts])
    for prompt, result in zip(prompts, together, strict=True):
        alone = attributor.attribute(**prompt, config=HetaConfig(num_hvp_samples=2))
        for name in ("scores", "hessian", "kl"):
            torch.testing.assert_close(getattr(result, name), getattr(alone, name), rtol=1e-6, atol=0)
