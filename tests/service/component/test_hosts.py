"""<heta-attribution> in host pages of a dashboard's own: a plain HTML page follows a live job, its
partial results then the final one, with the host's styles kept out; a React build draws a live job and
switches component and granularity."""

import pytest

from ..browser import parse_number, people
from .dashboard import HOSTS, KEY, PROMPT, drawn, final_result, submit, wait_final

LONG = {"text": "a=2 d=5 g=2 k=9 n=5 p=9 c=4 e=4 ? g", "target_text": " 2", "config": {"samples": 1500}}


def assert_spans_are_the_result(spans: list[dict], result: dict) -> None:
    assert [s["text"] for s in spans] == [
        t["text"] if t["text"] is not None else str(t["id"]) for t in result["tokens"]
    ]
    assert [float(s["value"]) for s in spans] == [
        t["score"] for t in result["tokens"]
    ]  # the document's numbers, unrounded
    for span, token in zip(
        spans, result["tokens"], strict=True
    ):  # what a screen reader says: the number as people read it
        shown = (
            span["label"].removeprefix(f"{span['text']}: ").rsplit(" ", 2)[0]
            if "%" in span["label"]
            else span["label"].split(": ", 1)[1]
        )
        assert shown == people(token["score"]) and parse_number(shown) == pytest.approx(token["score"], rel=5e-3)


def test_plain_html_host_follows_a_live_job_partials_then_the_result(api, site, pages):
    job_id = submit(api, LONG)
    html = (
        (HOSTS / "plain.html")
        .read_text()
        .replace("__JOB__", job_id)
        .replace("__API__", api.url)
        .replace("__KEY__", KEY)
    )
    (site.folder / "plain.html").write_text(html)
    view = pages(site.origin)
    page = view.page
    page.goto(f"{site.origin}/plain.html")
    page.wait_for_selector("#live .hm-partial", timeout=120_000)  # a partial result drawn while the job runs
    view.shot("component-plain-partial", full_page=False)
    page.evaluate("document.querySelector('#live').marker = 'same element'")
    wait_final(page)
    result = final_result(api, job_id)
    assert_spans_are_the_result(drawn(page), result)
    renders = page.evaluate("window.renders")
    partials = [r["stagesDone"] for r in renders if r["partial"]]
    assert partials and all(stages in (["flow"], ["flow", "kl"]) for stages in partials)
    assert renders[-1] == {"partial": False, "stagesDone": result["stages_done"], "jobId": job_id}
    assert page.evaluate("document.querySelector('#live').marker") == "same element"  # refined in place
    assert page.locator("#live .hm-partial").count() == 0
    # the host's own styles stop at the element: its text is not the page's serif, colour or capitals
    inside = page.eval_on_selector(
        "#live .hm-what",
        "e => [getComputedStyle(e).fontFamily, getComputedStyle(e).color, getComputedStyle(e).textTransform]",
    )
    assert "Georgia" not in inside[0] and inside[1] == "rgb(17, 17, 17)" and inside[2] == "none"
    assert page.eval_on_selector("#live .hm-unit", "e => getComputedStyle(e).borderTopStyle") == "none"
    # keyboard: Tab reaches the heatmap text, arrows walk its units with the tooltip
    page.focus("#live .hm-text")
    page.keyboard.press("ArrowRight")
    scores = [t["score"] for t in result["tokens"]]
    after_top = min(scores.index(max(scores)) + 1, len(scores) - 1)  # the walk starts at the top unit
    assert page.is_visible("#live .hm-tooltip") and page.evaluate(
        "document.querySelector('#live').shadowRoot.activeElement.dataset.index"
    ) == str(after_top)
    assert page.evaluate("window.hostAlive") and page.evaluate("window.errors") == []
    view.shot("component-plain-final", full_page=False)


def test_react_host_draws_a_live_job_and_switches_component_and_granularity(api, site, pages):
    job_id = submit(
        api,
        {"text": PROMPT, "target_text": " 3", "config": {"samples": 3, "granularity": ["word"], "diagnostics": True}},
    )
    view = pages(site.origin)
    page = view.page
    page.goto(f"{site.origin}/react.html?job={job_id}&api={api.url}&key={KEY}")
    wait_final(page)
    result = final_result(api, job_id)
    assert page.text_content("h2") == "React dashboard"
    assert_spans_are_the_result(drawn(page), result)
    for component in ("flow", "hessian", "kl"):
        page.check(f"#live .hm-components input[value='{component}']")
        assert [float(s["value"]) for s in drawn(page)] == [t[component] for t in result["tokens"]]
        assert page.text_content("#live .hm-legend-label").startswith(
            {"flow": "M_T", "hessian": "S", "kl": "I"}[component]
        )
    page.select_option("#live .hm-view select", "word")
    words = result["aggregates"]["word"]
    assert [(s["text"], float(s["value"])) for s in drawn(page)] == [(w["text"], w["kl"]) for w in words]
    page.hover("#live .hm-text .hm-unit >> nth=0")
    rows = page.eval_on_selector_all(
        "#live .hm-tooltip tbody tr", "rows => rows.map(r => [r.dataset.component, r.cells[1].textContent])"
    )
    assert dict(rows) == {c: people(words[0][c]) for c in ("score", "flow", "hessian", "kl")}
    view.shot("component-react-word-view", full_page=False)  # docs/dashboards.png
