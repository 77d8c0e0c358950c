"""What each step runs and at which size, on a GPU and in the CPU rehearsal."""

from __future__ import annotations

TEST_TOOLS = ("pytest", "pytest-timeout", "httpx")  # of the dev extra: what the suites gpu-check runs need
ENGINE_TESTS = [
    "tests/test_device.py",
    "tests/test_adapters.py",
    "tests/test_approximations.py",
    "tests/test_baselines.py",
    "tests/test_batching.py",
    "tests/test_chat_and_granularity.py",
    "tests/test_combine_and_result.py",
    "tests/test_cuda_graphs.py",
    "tests/test_determinism.py",
    "tests/test_diagnostics.py",
    "tests/test_estimate.py",
    "tests/test_fast_vs_reference.py",
    "tests/test_flow.py",
    "tests/test_hessian.py",
    "tests/test_inputs_and_config.py",
    "tests/test_targets.py",
]
SERVICE_TESTS = [
    "tests/service/test_service.py",
    "tests/service/test_admission.py",
    "tests/service/test_gpu_workers.py",
    "tests/test_gpu.py",
]
# two service tests need a job that runs for seconds; the same toy job takes ~0.1 s on a GPU
GPU_DESELECT = ["-k", "not answers_202_when_not_done_within_wait and not deadline_exceeded_is_504"]
# --cpu: the device tests that are not also half-precision model runs (CI runs the whole file anyway)
SMOKE_TESTS = ["tests/test_device.py", "-k", "accumulate or host or injected"]

GPU_SHAPES = {
    "bench_gpt2": dict(family="gpt2", layers=12, width=768, heads=12, vocab=50257, context=256, dtype="float32"),
    "bench_llama": dict(
        family="llama",
        layers=16,
        width=2048,
        heads=32,
        kv_heads=8,
        ffn=8192,
        vocab=128256,
        context=256,
        dtype="bfloat16",
    ),
}
CPU_SHAPES = {
    "bench_gpt2": dict(family="gpt2", layers=2, width=32, heads=4, vocab=97, context=12, dtype="float32"),
    "bench_llama": dict(
        family="llama", layers=2, width=32, heads=4, kv_heads=2, ffn=64, vocab=97, context=12, dtype="bfloat16"
    ),
}
REFERENCE_CONTEXT = {"gpu": 64, "cpu": 6}
SAMPLES = {"gpu": 10, "cpu": 2}
SERVICE_REQUESTS = {"gpu": 50, "cpu": 20}
# --quick: the matmul ceiling's side (None: heta bench's own, 8192 on a GPU) and the service's requests
QUICK_CEILING_SIZE = {"gpu": None, "cpu": 256}
QUICK_SERVICE_REQUESTS = {"gpu": 10, "cpu": 5}
STEPS = ("tests", "bench_gpt2", "bench_llama", "long", "service")
# The whole check runs within a budget (--budget-s; install included): a GPU machine is lent for ~15
# minutes, start-up and install included. Each step's time box is its share (PLAN_S) of what remains
# when it starts, so time a step leaves unused goes to the steps after it; a step whose box would be
# under MIN_BOX_S is skipped and says so.
BUDGET_S = {"full": 600, "quick": 240}
PLAN_S = {"tests": 200, "bench_gpt2": 90, "bench_llama": 120, "long": 100, "service": 90}
MIN_BOX_S = 5
