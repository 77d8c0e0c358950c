from itertools import pairwise

import pytest
from transformers import GPT2Config

from heta_core.models.adapters import HeadLayout
from heta_core.models.toymodels import llama_shaped
from heta_core.runtime.cost import row_bytes_fn
from heta_core.runtime.prefix import FILL_FRACTION, SPAN_FRACTION, plan_chunks


@pytest.mark.parametrize("budget", [1, 5_000, 50_000, 10**12])
def test_plan_covers_items_in_order_within_budget_and_span(budget):
    positions = [i for i in range(40) for _ in range(3)]
    row = lambda n, context=None: 100 * n  # noqa: E731
    chunks = plan_chunks(positions, 40, row, budget)
    assert chunks[0][0] == 0 and chunks[-1][1] == len(positions)
    assert all(a[1] == b[0] for a, b in pairwise(chunks))
    for lo, hi in chunks:
        start = positions[lo]
        assert hi - lo == 1 or (hi - lo) * row(40 - start) <= budget
        # the span bound gives way only while the chunk (before its last row) held under half the budget
        within_span = positions[hi - 1] - start <= max(1, SPAN_FRACTION * (40 - start))
        assert within_span or (hi - 1 - lo) * row(40 - start) < FILL_FRACTION * budget


def test_single_row_always_allowed():
    assert plan_chunks([0, 1, 2], 3, lambda n, context=None: 10**9, 1) == [(0, 1), (1, 2), (2, 3)]


SHAPES = {
    "gpt2-small": (GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257), "float32"),
    "llama-1b": (llama_shaped(), "bfloat16"),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("budget_mb", [512, 8_192, 70_000])  # the CPU default; GPU budgets (half an H200 is ~70 GB)
@pytest.mark.parametrize("probes", [0, 10])  # masked forwards (KL), HVPs with m = 10
def test_planned_chunks_use_at_least_half_the_budget_when_the_work_allows(shape, budget_mb, probes):
    """The memory model's chunks reach the budget: whenever the rows still to run would need more
    than the budget, the planned chunk takes at least half of it (a small chunk leaves a GPU idle)."""
    import torch

    config, dtype = SHAPES[shape]
    row = row_bytes_fn(config, HeadLayout.from_config(config), getattr(torch, dtype), probes=probes)
    budget = budget_mb * 2**20
    for tokens in (64, 256, 2048):
        positions = list(range(tokens))
        chunks = plan_chunks(positions, tokens, row, budget)
        checked = 0
        for lo, hi in chunks:
            per_row = row(tokens - positions[lo], tokens)
            used = (hi - lo) * per_row
            assert hi - lo == 1 or used <= budget
            if (len(positions) - lo) * per_row > budget:  # the work allows a full chunk
                assert used >= 0.5 * budget, (tokens, lo, hi, used / budget)
                checked += 1
        assert checked or len(positions) * row(tokens, tokens) <= budget
