"""The explorer page (GET /) in a real Chromium against a live `heta serve` of heta-demo, with every
request that leaves the server blocked: the page, its exports and /docs work offline.

Screenshots of each state go to $HETA_TEST_ARTEFACTS (default: a temporary folder; never committed)."""

import json
import math
import struct
import time

import pytest

from .browser import OfflinePage, luminance, parse_number, people, probability
from .conftest import serve

PROMPT = "c=6 e=6 b=3 h=3 m=6 ? h"
# the focused element, inside <heta-attribution>'s shadow root when the focus is there
DEEP_ACTIVE = (
    "(() => { let a = document.activeElement; while (a.shadowRoot && a.shadowRoot.activeElement) a = "
    "a.shadowRoot.activeElement; return a; })()"
)
LONG = "a=2 d=5 g=2 k=9 n=5 p=9 c=4 e=4 ? g"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("explorer")
    with serve(None, folder, MAX_SAMPLES=5000) as running:  # room for a job long enough to watch and cancel
        running.log = folder / "serve.log"
        yield running


@pytest.fixture
def offline(browser, server):
    pages = []

    def open_page(path="/", **size) -> OfflinePage:
        page = OfflinePage(browser, server.url, **size)
        pages.append(page)
        if path is not None:
            page.page.goto(server.url + path)
        return page

    yield open_page
    for page in pages:
        assert page.blocked == [], f"requests left the server: {page.blocked}"
        assert page.errors == [], f"the page raised: {page.errors}"
        page.close()


def ready(page) -> None:
    """Wait until the page has loaded the served models."""
    page.wait_for_selector("#model option[value='heta-demo']", state="attached")


def explained(page, count: int = 1, timeout: float = 120_000) -> list[str]:
    """Wait for ``count`` rendered final results (a HETA card is drawn at its first partial result
    and refined in place: `data-partial` is empty once it shows the final); their job ids."""
    # each card's <heta-attribution> draws in its own (open) shadow root
    page.wait_for_function(
        "[...document.querySelectorAll('#results .result heta-attribution')].some(h => "
        f"h.shadowRoot.querySelector('.hm-unit')) && document.querySelectorAll('#results .result').length == {count} "
        f"&& document.querySelectorAll('#results .result[data-partial=\"\"]').length == {count}",
        timeout=timeout,
    )
    return page.eval_on_selector_all("#results .result", "cards => cards.map(c => c.dataset.jobId)")


def spans(page, card: str = "#results .result") -> list[dict]:
    return page.eval_on_selector_all(
        f"{card} .hm-text .hm-unit",
        "units => units.map(u => ({text: u.textContent, value: u.dataset.value, share: u.dataset.share, "
        "colour: getComputedStyle(u).backgroundColor, positions: u.dataset.position}))",
    )


def result_of(server, job_id: str) -> dict:
    job = server.http.get(f"/jobs/{job_id}").json()
    assert job["status"] == "done", job
    return job["result"]


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


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


def ask_long(page, samples: int) -> float:
    """Asks for LONG's answer with ``samples`` Hessian samples (seconds of work); when it was asked."""
    ready(page)
    page.fill("#text", LONG)
    page.fill("#target-text", " 2")
    page.click("#options summary")
    page.fill("#samples", str(samples))
    started = time.monotonic()
    page.click("#explain")
    return started


def test_long_job_progress_rises_and_cancel_stops_it(server, offline):
    view = offline()
    page = view.page
    started = ask_long(page, 5000)
    page.wait_for_selector("#runs .job[data-job-id]")
    job_id = page.get_attribute("#runs .job", "data-job-id")
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len({v for v in seen if v > 0}) < 2:
        seen.append(float(page.eval_on_selector("#runs progress", "p => p.value")))
        time.sleep(0.1)
    rising = [v for v in seen if v > 0]
    assert len(set(rising)) >= 2 and rising == sorted(rising) and rising[-1] < 1, seen
    view.shot("04-long-job-progress", full_page=False)
    rose = time.monotonic() - started
    page.click("#runs button.cancel")
    page.wait_for_selector("#runs .job-status[data-status='cancelled']", timeout=60_000)
    print(
        f"long job: progress rose to {rising[-1]:.2f} after {rose:.1f} s; cancelled "
        f"{time.monotonic() - started - rose:.1f} s later"
    )
    assert page.text_content("#runs .job-status") == "cancelled"
    assert "cancelled" in page.text_content("#alert")
    view.shot("05-long-job-cancelled", full_page=False)
    assert server.http.get(f"/jobs/{job_id}").json()["status"] == "cancelled"


def test_a_heta_heatmap_is_drawn_at_its_first_partial_and_refined_in_place(server, offline):
    """Flow + KL first ("curvature still running", the trust line waiting), then the final result in the
    same card, with the component the reader chose kept."""
    view = offline()
    page = view.page
    started = ask_long(page, 1500)  # several seconds of Hessian work on heta-demo
    page.wait_for_selector("#results .result[data-partial='flow,kl'] .hm-unit", timeout=120_000)
    first = time.monotonic() - started
    job_id = page.get_attribute("#results .result", "data-job-id")
    partial = server.http.get(f"/jobs/{job_id}").json()["partial"]
    assert partial["stages_done"] == ["flow", "kl"] and partial["partial"] is True
    assert page.text_content("#results .hm-partial") == (
        "Partial result: flow + KL impact, curvature still running — this map is refined in place when the job ends."
    )
    assert page.text_content("#results .hm-trust-pending").startswith("Waiting for the final result")
    assert [float(s["value"]) for s in spans(page)] == [t["score"] for t in partial["tokens"]]
    # the terms known so far can be shown; the curvature is not offered yet
    offered = page.eval_on_selector_all("#results .hm-components input", "inputs => inputs.map(i => i.value)")
    assert offered == ["score", "flow", "kl"]
    page.check("#results .hm-components input[value='kl']")
    page.evaluate("document.querySelector('#results .result').marker = 'same card'")
    view.shot("14-partial-heatmap", full_page=False)
    (final_id,) = explained(page)
    total = time.monotonic() - started
    assert final_id == job_id and page.evaluate("document.querySelector('#results .result').marker") == "same card"
    result = result_of(server, job_id)
    assert page.locator("#results .hm-partial").count() == 0 and page.locator("#results .hm-trust-pending").count() == 0
    assert page.is_checked("#results .hm-components input[value='kl']")  # the reader's choice survives the refinement
    assert [float(s["value"]) for s in spans(page)] == [t["kl"] for t in result["tokens"]]
    page.check("#results .hm-components input[value='score']")
    assert [float(s["value"]) for s in spans(page)] == [t["score"] for t in result["tokens"]]
    view.shot("15-partial-refined", full_page=False)
    print(f"partial heatmap after {first:.2f} s, final after {total:.2f} s")
    assert first < total


def test_exports_json_report_and_png(server, offline, tmp_path):
    view = offline()
    page = view.page
    ready(page)
    page.click("#explain")
    (job_id,) = explained(page)
    job = server.http.get(f"/jobs/{job_id}").json()

    with page.expect_download() as download:
        page.click("#results .toolbar button:has-text('JSON')")
    exported = tmp_path / "result.json"
    download.value.save_as(exported)
    # byte-equal to the document the API stored and serves (POST /attribute answered these bytes;
    # the event stream of the finished job sends them too)
    with server.http.stream("GET", f"/jobs/{job_id}/events") as events:
        stored = [line.removeprefix("data: ") for line in events.iter_lines() if line.startswith("data: ")][-1]
    assert exported.read_bytes() == stored.encode() and json.loads(stored) == job["result"]

    with page.expect_download() as download:
        page.click("#results .toolbar button:has-text('HTML report')")
    report = tmp_path / "report.html"
    download.value.save_as(report)
    html = report.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html  # no external asset of any kind
    assert html == server.http.get(f"/jobs/{job_id}/report").text

    with page.expect_download() as download:
        page.click("#results .toolbar button:has-text('PNG')")
    png = tmp_path / "heatmap.png"
    download.value.save_as(png)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width == 960 and 100 < height < 1000
    (view.shot("06-exports", full_page=False))
    page_spans = spans(page)

    # the report opened from disk, with nothing reachable but the file: the same heatmap
    disk = offline(path=None)
    disk.allowed = None
    disk.page.goto(report.as_uri())
    disk.page.wait_for_selector(".hm-unit")
    assert spans(disk.page, "#heatmap") == page_spans
    assert disk.page.text_content(".hm-trust") == page.text_content("#results .hm-trust")
    disk.shot("07-report-from-disk")


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


def test_problems_are_shown_in_words_and_the_page_fits_a_narrow_window(server, offline):
    view = offline(width=390, height=844)
    page = view.page
    ready(page)
    page.click("#options summary")
    page.fill("#samples", "100000")
    page.click("#explain")
    page.wait_for_selector("#alert:not([hidden])")
    message = page.text_content("#alert")
    assert message.startswith("The request cannot be run (422 ") and "samples" in message
    assert page.text_content("#runs .job-status") == "refused (422)"
    assert no_horizontal_scroll(page)
    view.shot("09-narrow-422-message")
    page.fill("#samples", "10")
    page.click("#explain")
    explained(page)
    assert no_horizontal_scroll(page)
    view.shot("10-narrow-result")


def test_docs_and_redoc_render_with_the_network_blocked(server, offline):
    operations = sum(len(ops) for ops in server.http.get("/openapi.json").json()["paths"].values())
    view = offline("/docs")
    view.page.wait_for_selector(".opblock", timeout=60_000)
    assert view.page.locator(".opblock").count() == operations
    assert view.page.locator(".opblock-summary-path:has-text('/jobs/{job_id}/events')").count() == 1
    view.shot("11-docs-offline", full_page=False)
    redoc = offline("/redoc")
    redoc.page.locator("h2", has_text="Server-sent events").first.wait_for(timeout=60_000)
    redoc.shot("12-redoc-offline", full_page=False)
