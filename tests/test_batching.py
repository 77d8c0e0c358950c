import pytest

from heta_core.runtime.batching import SPAN_FRACTION, plan_chunks


@pytest.mark.parametrize("budget", [1, 5_000, 50_000, 10**12])
def test_plan_covers_items_in_order_within_budget_and_span(budget):
    positions = [i for i in range(40) for _ in range(3)]
    row = lambda n: 100 * n  # noqa: E731
    chunks = plan_chunks(positions, 40, row, budget)
    assert chunks[0][0] == 0 and chunks[-1][1] == len(positions)
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    for lo, hi in chunks:
        start = positions[lo]
        assert hi - lo == 1 or (hi - lo) * row(40 - start) <= budget
        assert positions[hi - 1] - start <= max(1, SPAN_FRACTION * (40 - start))


def test_single_row_always_allowed():
    assert plan_chunks([0, 1, 2], 3, lambda n: 10**9, 1) == [(0, 1), (1, 2), (2, 3)]
