"""The explorer's heatmap in a real Chromium, with every request that leaves the server blocked: the
default example's heatmap is the API's result, every component and granularity shows the result's
numbers, a generation's targets get a row of the matrix each, and HETA compares with integrated
gradients.

Screenshots of each state go to $HETA_TEST_ARTEFACTS (default: a temporary folder; never committed)."""

import math
import time

import pytest

from ..browser import (
    explained,
    luminance,
    no_horizontal_scroll,
    parse_number,
    people,
    probability,
    ready,
    result_of,
    spans,
)

PROMPT = "c=6 e=6 b=3 h=3 m=6 ? h"
# the focused element, inside <heta-attribution>'s shadow root when the focus is there
DEEP_ACTIVE = (
    "(() => { let a = document.activeElement; while (a.shadowRoot && a.shadowRoot.activeElement) a = "
    "a.shadowRoot.activeElement; return a; })()"
)


def test_default_example_heatmap_equals_the_api_result(server, offline):
    assert f"the explorer is at {server.url}/" in server.log.read_text()  # `heta serve` prints the page's URL
    view = offline()
    page = view.page
    ready(page)
    view.shot("01-page-loaded", full_page=False)
    assert page.input_value("#text") == PROMPT and page.input_value("#target-text") == " 3"
    assert page.is_checked("#diagnostics")  # on by default in the page
    started = time.monotonic()
    page.click("#explain")
    (job_id,) = explained(page)
    seconds = time.monotonic() - started
    view.shot("02-default-example-result")
    result = result_of(server, job_id)

    shown = spans(page)
    assert [s["text"] for s in shown] == [t["text"] for t in result["tokens"]]
    assert [float(s["value"]) for s in shown] == [
        t["score"] for t in result["tokens"]
    ]  # the very numbers of the result
    total = sum(abs(t["score"]) for t in result["tokens"])
    assert [float(s["share"]) for s in shown] == pytest.approx(
        [t["score"] / total for t in result["tokens"]], rel=1e-12
    )
    # colour order follows the scores: a higher score is never lighter, and the top token is the darkest
    order = sorted(range(len(shown)), key=lambda i: -result["tokens"][i]["score"])
    lightness = [luminance(shown[i]["colour"]) for i in order]
    assert lightness == sorted(lightness)
    top = order[0]
    assert shown[top]["text"] == "h=3" and result["tokens"][top]["position"] == 3  # heta-demo's answer pair
    assert lightness[0] < lightness[1] and lightness[0] < 0.15
    # the target is shown after the prompt, and the trust panel says in words what the diagnostics measured
    assert page.text_content("#results .hm-target-token") == "3"
    row = result["diagnostics"]["rows"][0]
    three = row["points"][1]
    assert page.text_content("#results .hm-trust") == (
        f'Removing the 3 top tokens drops p("3") from {probability(row["probability"])} to '
        f"{probability(three['removed'])}; "
        f"keeping only them gives {probability(three['kept'])}."
    )
    assert three["removed"] < 0.01 < 0.9 < row["probability"]
    table = page.eval_on_selector_all(
        "#results .hm-diag-table tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    assert table == [
        [
            f"10 % ({p['k']})" if p["fraction"] else str(p["k"]),
            probability(p["removed"]),
            probability(p["kept"]),
            probability(p["comprehensiveness"]),
            probability(p["sufficiency"]),
        ]
        for p in row["points"]
    ]
    # the top-k list shows raw values with their share of the total
    first = page.text_content("#results .hm-top li")
    assert (
        first == f"h=3 {people(result['tokens'][top]['score'])} ({100 * result['tokens'][top]['score'] / total:.1f} %)"
    )
    # queue panel: the job is among the caller's recent jobs, heta-demo has its worker
    page.wait_for_selector(f"#recent-jobs button[data-job-id='{job_id}'] .job-status[data-status='done']")
    cells = page.eval_on_selector_all(
        "#queue-models tbody tr[data-model='heta-demo'] td", "cells => cells.map(c => c.textContent)"
    )
    busy, idle = (int(v) for v in cells[3].split(" / "))
    assert cells[0] == "heta-demo" and busy + idle == 1
    assert no_horizontal_scroll(page)
    print(f"default example: heatmap after {seconds:.1f} s")


def test_components_and_granularities_show_the_result_numbers(server, offline):
    view = offline()
    page = view.page
    ready(page)
    page.click("#examples button >> nth=1")  # "b=?": f=3 b=7 k=3 a=1 ? b → 7 (one click: fills and runs)
    (job_id,) = explained(page)
    result = result_of(server, job_id)
    assert result["text"].startswith("f=3 b=7")
    for component in ("flow", "hessian", "kl", "score"):
        page.check(f"#results input[value='{component}']")
        for granularity in ("token", "word", "sentence"):
            page.select_option("#results .hm-view select", granularity)
            units = result["tokens"] if granularity == "token" else result["aggregates"][granularity]
            shown = spans(page)
            assert [s["text"] for s in shown] == [u["text"] for u in units], (component, granularity)
            assert [float(s["value"]) for s in shown] == [u[component] for u in units], (component, granularity)
        legend = page.text_content("#results .hm-legend-label")
        assert legend.startswith({"score": "score", "flow": "M_T", "hessian": "S", "kl": "I"}[component])
    # hover a word: the tooltip shows every number of it, formatted for people, with its share of the total
    page.select_option("#results .hm-view select", "word")
    words = result["aggregates"]["word"]
    page.hover("#results .hm-text .hm-unit >> nth=1")
    page.wait_for_selector("#results .hm-tooltip:not([hidden])")
    view.shot("03-word-view-tooltip", full_page=False)
    rows = page.eval_on_selector_all(
        "#results .hm-tooltip tbody tr",
        "rows => rows.map(r => [r.dataset.component, r.cells[1].textContent, r.cells[2].textContent])",
    )
    assert [r[0] for r in rows] == ["score", "flow", "hessian", "kl"]
    for component, number, share in rows:
        value = words[1][component]
        total = sum(abs(w[component]) for w in words)
        assert number == people(value) and parse_number(number) == pytest.approx(value, rel=5e-3)
        assert parse_number(share) == pytest.approx(100 * value / total, abs=0.051) or share == "<0.1 %"
    # keyboard: the heatmap is reachable with Tab and walked with the arrow keys
    page.focus("#results .hm-text")
    page.keyboard.press("ArrowRight")
    focused = page.evaluate(f"{DEEP_ACTIVE}.dataset.index")
    assert focused is not None and page.is_visible("#results .hm-tooltip")
    page.keyboard.press("Escape")
    tabbed = []
    page.focus("#model")
    for _ in range(60):
        page.keyboard.press("Tab")
        tabbed.append(page.evaluate(f"(a => a.id || a.className)({DEEP_ACTIVE})"))
    assert "explain" in tabbed and "hm-text" in tabbed
    # a click on a token makes it the target
    page.click("#results .hm-view select")
    page.select_option("#results .hm-view select", "token")
    page.click("#results .hm-text .hm-unit >> nth=2")
    assert (
        page.is_checked("input[name='target-kind'][value='position']") and page.input_value("#target-position") == "2"
    )
    assert "position 2" in page.text_content("#alert")


def test_each_target_of_a_generation_gets_a_row_of_the_matrix(server, offline):
    view = offline()
    page = view.page
    ready(page)
    page.fill("#text", PROMPT)
    page.check("input[name='target-kind'][value='generate']")
    page.fill("#generate", "2")
    page.select_option("#target-mode", "each")
    page.click("#explain")
    (job_id,) = explained(page)
    result = result_of(server, job_id)
    assert result["target_mode"] == "each"
    targets = result["targets"]
    assert len(targets) == 2
    rows = page.eval_on_selector_all(
        "#results .hm-matrix-table tbody tr",
        "rows => rows.map(r => [...r.querySelectorAll('td')].map(c => c.dataset.value))",
    )
    # one row per generated token, one cell per prompt token, each the result's score of that pair
    assert [[float(v) for v in row] for row in rows] == [
        [t["score"][j] for t in result["tokens"]] for j in range(len(targets))
    ]
    labels = page.eval_on_selector_all("#results .hm-matrix-table tbody th", "cells => cells.map(c => c.textContent)")
    assert labels == [f'"{t["text"]}"' for t in targets]
    # a row of the matrix picks the target row of the heatmap
    page.click("#results .hm-matrix-table tbody th button >> nth=1")
    shown = spans(page)
    assert [float(s["value"]) for s in shown] == [t["score"][1] for t in result["tokens"]]
    view.shot("13-each-target-matrix")


def test_compare_heta_with_integrated_gradients(server, offline):
    view = offline()
    page = view.page
    ready(page)
    page.click("#examples button:has-text('integrated gradients')")
    jobs = explained(page, count=2)
    left, right = (result_of(server, job_id) for job_id in jobs)
    assert (left["method"], right["method"]) == ("heta", "integrated_gradients")
    a, b = [t["score"] for t in left["tokens"]], [t["score"] for t in right["tokens"]]
    assert page.text_content("#spearman") == f"{spearman(a, b):.3f}"
    top = lambda scores: set(sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:3])  # noqa: E731
    assert page.text_content("#top-overlap") == f"{len(top(a) & top(b))} / 3"
    # IG is signed: a diverging scale; both sides show their own faithfulness
    assert "diverging" in page.text_content("#results .result[data-method='integrated_gradients'] .hm-legend-label")
    trust = page.eval_on_selector_all("#results .hm-trust", "nodes => nodes.map(n => n.textContent)")
    assert len(trust) == 2 and all(t.startswith("Removing the 3 top tokens") for t in trust)
    assert no_horizontal_scroll(page)
    view.shot("08-compare-heta-ig")


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's ρ with average ranks for ties, written out."""

    def ranks(values):
        order = sorted(range(len(values)), key=lambda i: values[i])
        result = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                result[order[k]] = (i + j) / 2 + 1
            i = j + 1
        return result

    ra, rb = ranks(a), ranks(b)
    mean = (len(a) + 1) / 2
    num = sum((x - mean) * (y - mean) for x, y in zip(ra, rb, strict=True))
    return num / math.sqrt(sum((x - mean) ** 2 for x in ra) * sum((y - mean) ** 2 for y in rb))
