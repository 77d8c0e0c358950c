"""<heta-attribution> in a real Chromium: embedded in host pages of their own — plain HTML and a
minimal React build (bundled here by esbuild from the npm packages) — served from another origin than
the live `heta serve` (HETA_CORS_ORIGINS lets them in), each following a live job; the drawn spans equal
the result's tokens and numbers; a malformed document shows a readable error in place; and the
explorer, the HTML report and the bare element draw the same pixels for one result.

The committed bundle (heta_core/results/assets/heta-attribution.js, which the explorer and the report
load without node) must be what clients/typescript builds. Screenshots go to $HETA_TEST_ARTEFACTS."""

import functools
import http.server
import json
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from heta_core.results.report import ASSETS

from ..helpers import ROOT, heta_command
from .browser import OfflinePage, artefacts, parse_number, people
from .conftest import base_env, free_port, serve

PACKAGE = ROOT / "clients" / "typescript"
HOSTS = Path(__file__).resolve().parent / "hosts"
KEY = "dash-key"
PROMPT = "c=6 e=6 b=3 h=3 m=6 ? h"
LONG = {"text": "a=2 d=5 g=2 k=9 n=5 p=9 c=4 e=4 ? g", "target_text": " 2", "config": {"samples": 1500}}
AUTH = {"Authorization": f"Bearer {KEY}"}
# a pixel differs when a channel differs by more than this (anti-aliasing of one glyph edge is ~100+)
CHANNEL_TOLERANCE = 24
MAX_DIFFERING = 0.005  # of the element's pixels


def test_the_committed_bundle_is_what_the_sources_build(tmp_path):
    done = subprocess.run(
        ["node", "scripts/bundle.mjs", "--out", str(tmp_path)], cwd=PACKAGE, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    fresh = (tmp_path / "heta-attribution.js").read_bytes()
    committed = (ASSETS / "heta-attribution.js").read_bytes()
    assert fresh == committed, (
        "clients/typescript changed: run `npm run assets` there and commit heta_core/results/assets/heta-attribution.js"
    )


class HostSite:
    """A dashboard's own web server (another origin than the API): static files from ``folder``."""

    def __init__(self, folder: Path):
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        handler = functools.partial(_QuietFiles, directory=str(folder))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_args):
        pass


def build_react_host(folder: Path) -> None:
    """react-host.jsx bundled as a dashboard team would: `heta-client` resolved as an installed package."""
    modules = folder / "node_modules"
    modules.mkdir()
    (modules / "heta-client").symlink_to(PACKAGE)
    script = (
        'import * as esbuild from "esbuild";\n'
        f"await esbuild.build({{ entryPoints: [{json.dumps(str(HOSTS / 'react-host.jsx'))}], bundle: true, "
        "format: 'esm', "
        f"jsx: 'automatic', outfile: {json.dumps(str(folder / 'react-host.js'))}, "
        f"nodePaths: [{json.dumps(str(modules))}, "
        f"{json.dumps(str(PACKAGE / 'node_modules'))}], "
        "define: { 'process.env.NODE_ENV': '\"production\"' }, logLevel: 'error' });"
    )
    done = subprocess.run(
        ["node", "--input-type=module", "-e", script], cwd=PACKAGE, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    (folder / "react.html").write_text(
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>React host</title></head>'
        '<body><div id="root"></div><script type="module" src="react-host.js"></script></body></html>'
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dashboard")
    shutil.copy(ASSETS / "heta-attribution.js", folder)
    (folder / "bare.html").write_text(BARE)
    build_react_host(folder)
    running = HostSite(folder)
    running.folder = folder
    yield running
    running.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory, site):
    folder = tmp_path_factory.mktemp("component")
    with serve(None, folder, API_KEYS=KEY, CORS_ORIGINS=site.origin, MAX_SAMPLES=5000) as running:
        yield running


@pytest.fixture
def pages(browser, api, site):
    opened = []

    def open_page(allowed: str | None = None, **size) -> OfflinePage:
        page = OfflinePage(browser, allowed, **size)
        page.context.route(
            f"{api.url}/**", lambda route: route.continue_()
        )  # the API is the second origin it may reach
        opened.append(page)
        return page

    yield open_page
    for page in opened:
        assert page.blocked == [], f"requests left the two servers: {page.blocked}"
        assert page.errors == [], f"the page raised: {page.errors}"
        page.close()


BARE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>bare</title></head><body>'
    '<script src="heta-attribution.js"></script><heta-attribution id="live"></heta-attribution></body></html>'
)


def open_bare(page, site, document: dict, methods: dict | None = None) -> None:
    """The element alone on a page of the host site, given ``document`` (and the methods' scales)."""
    page.goto(f"{site.origin}/bare.html")
    page.wait_for_function("customElements.get('heta-attribution') !== undefined")
    script = (
        "([doc, methods]) => { const e = document.querySelector('#live'); "
        "if (methods) e.methods = methods; e.result = doc; }"
    )
    page.evaluate(script, [document, methods])


def submit(api, body: dict) -> str:
    answer = api.http.post("/jobs", json=body, headers=AUTH)
    assert answer.status_code == 202, answer.text
    return answer.json()["job_id"]


def final_result(api, job_id: str) -> dict:
    job = api.wait_status(job_id, {"done"}, timeout=180, headers=AUTH)
    return job["result"]


def drawn(page, selector: str = "#live") -> list[dict]:
    return page.eval_on_selector_all(
        f"{selector} .hm-text .hm-unit",
        "units => units.map(u => ({text: u.textContent, value: u.dataset.value, label: u.getAttribute('aria-label')}))",
    )


def wait_final(page, selector: str = "#live", timeout: float = 180_000) -> None:
    page.wait_for_function(
        f"(() => {{ const e = document.querySelector('{selector}'); return e && e.result && !(typeof e.result === "
        "'object' && e.result.partial) && e.shadowRoot.querySelector('.hm-unit'); })()",
        timeout=timeout,
    )


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


def test_each_matrix_and_trust_table_are_drawn(api, site, pages):
    job_id = submit(
        api, {"text": PROMPT, "generate": 2, "target_mode": "each", "config": {"samples": 2, "diagnostics": True}}
    )
    result = final_result(api, job_id)
    view = pages(site.origin)
    page = view.page
    open_bare(page, site, result)
    wait_final(page)
    cells = page.eval_on_selector_all(
        "#live .hm-matrix-table tbody tr",
        "rows => rows.map(r => [...r.querySelectorAll('td')].map(c => Number(c.dataset.value)))",
    )
    assert cells == [[t["score"][j] for t in result["tokens"]] for j in range(2)]
    points = page.eval_on_selector_all("#live .hm-diag-table tbody tr", "rows => rows.map(r => r.dataset.k)")
    assert points == [str(p["k"]) for p in result["diagnostics"]["rows"][0]["points"]]
    # themed through its custom properties, set on the element from outside
    page.evaluate(
        "(e => { e.style.setProperty('--heta-font-size', '20px'); e.style.setProperty('--heta-accent-color', 'rgb(200, "
        "0, 0)'); })(document.querySelector('#live'))"
    )
    assert page.eval_on_selector("#live .hm-what", "e => getComputedStyle(e).fontSize") == "20px"
    assert page.eval_on_selector("#live .hm-bar-fill", "e => getComputedStyle(e).backgroundColor") == "rgb(200, 0, 0)"


def test_a_malformed_document_shows_a_readable_error_in_place(site, pages):
    view = pages(site.origin)
    page = view.page
    (site.folder / "malformed.html").write_text(
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>malformed</title></head><body><script '
        'src="heta-attribution.js"></script><heta-attribution id="inline"><script type="application/json">{"method": '
        '"heta", "tokens": [</script></heta-attribution><heta-attribution id="live"></heta-attribution><p '
        'id="after">still here</p></body></html>'
    )
    page.goto(f"{site.origin}/malformed.html")
    assert page.text_content("#inline .hm-error").startswith("This attribution cannot be shown: the result is not JSON")
    cases = {
        "null": "the result must be a JSON object, not null",
        "[1, 2]": "the result must be a JSON object, not a list",
        '{"method": "heta", "tokens": "abc", "targets": [], "meta": {}}': "this is not a HETA result document: it "
        "lacks “tokens” (a list of tokens with a position), “targets” (a non-empty list), “meta.model”",
    }
    for document, message in cases.items():
        page.evaluate(f"document.querySelector('#live').result = {document}")
        error = page.locator("#live .hm-error")
        assert error.is_visible() and error.get_attribute("role") == "alert"
        assert error.text_content() == f"This attribution cannot be shown: {message}."
    # a document that passes the check but breaks the drawing (a null word in the view asked for): still a message
    page.evaluate(
        "(e => { e.setAttribute('view', 'word'); e.result = {method: 'heta', tokens: [{position: 0, id: 5, score: 1}], "
        "targets: [{id: 6}], meta: {model: 'm'}, aggregates: {word: [null]}}; })(document.querySelector('#live'))"
    )
    assert page.text_content("#live .hm-error").startswith(
        "This attribution cannot be shown: a part of the document has a shape this version of the element cannot draw ("
    )
    assert page.text_content("#after") == "still here"  # the host page goes on
    view.shot("component-malformed", full_page=False)


def test_cors_lets_the_configured_origin_in_and_no_other(api, site, tmp_path):
    allowed = api.http.options(
        "/models",
        headers={
            "Origin": site.origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == site.origin
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    other = api.http.options(
        "/models", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    answer = api.http.get("/models", headers={**AUTH, "Origin": site.origin})
    assert (
        answer.headers["access-control-allow-origin"] == site.origin
        and "retry-after" in answer.headers["access-control-expose-headers"].lower()
    )
    # an origin with a path never matches what a browser sends: refused at start, in one line
    env = base_env(None, tmp_path, CORS_ORIGINS="https://dash.example.com/")
    done = subprocess.run(heta_command("serve"), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and done.stderr.strip() == (
        "heta serve: error: HETA_CORS_ORIGINS: 'https://dash.example.com/' is not an origin like "
        "https://dashboards.example.com (or *)"
    )


def element_pixels(page, selector: str, name: str) -> np.ndarray:
    """The element alone, at the same width and on the same background in every page."""
    page.evaluate(
        f"""(() => {{
          const e = document.querySelector('{selector}');
          e.style.width = '860px';
          e.style.setProperty('--heta-background', '#fff');
          // on whole pixels: a box at y = 402.5 in one page and 410 in another would be rasterised differently
          const box = e.getBoundingClientRect();
          Object.assign(e.style, {{ position: 'relative', left: `${{Math.ceil(box.left) - box.left}}px`, top: `${{Math.ceil(box.top) - box.top}}px` }});
        }})()"""  # noqa: E501 - JavaScript, kept as it is written
    )
    page.mouse.move(0, 0)
    page.evaluate("document.activeElement && document.activeElement.blur()")
    path = artefacts() / f"{name}.png"
    page.locator(selector).screenshot(path=str(path))
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_explorer_report_and_component_draw_the_same_pixels(api, site, pages, tmp_path):
    view = pages(api.url, width=1400, height=1000)
    page = view.page
    page.add_init_script(f"sessionStorage.setItem('heta-api-key', {json.dumps(KEY)})")
    page.goto(api.url + "/")
    page.wait_for_selector("#model option[value='heta-demo']", state="attached")
    page.click("#examples button:has-text('README')")
    page.wait_for_function(
        "document.querySelector('#results .result[data-partial=\"\"]') && "
        "document.querySelector('#results heta-attribution').shadowRoot.querySelector('.hm-unit')",
        timeout=120_000,
    )
    job_id = page.get_attribute("#results .result", "data-job-id")
    result = final_result(api, job_id)
    explorer = element_pixels(page, "#results heta-attribution", "pixels-explorer")

    report = tmp_path / "report.html"
    report.write_text(api.http.get(f"/jobs/{job_id}/report", headers=AUTH).text, encoding="utf-8")
    disk = pages(None, width=1400, height=1000)
    disk.page.goto(report.as_uri())
    wait_final(disk.page, "#heatmap")
    from_report = element_pixels(disk.page, "#heatmap", "pixels-report")

    bare = pages(site.origin, width=1400, height=1000)
    open_bare(bare.page, site, result, api.http.get("/models", headers=AUTH).json()["method_details"])
    wait_final(bare.page)
    component = element_pixels(bare.page, "#live", "pixels-component")

    differing = {}
    for name, other in (("report", from_report), ("component", component)):
        # a fractional page offset can round the element's box one pixel taller: compared over the common box
        assert explorer.shape[1] == other.shape[1] and abs(explorer.shape[0] - other.shape[0]) <= 1, (
            explorer.shape,
            other.shape,
        )
        rows = min(explorer.shape[0], other.shape[0])
        differs = (np.abs(explorer[:rows] - other[:rows]).max(axis=2) > CHANNEL_TOLERANCE).sum() + abs(
            explorer.shape[0] - other.shape[0]
        ) * explorer.shape[1]
        differing[name] = float(differs / explorer[:, :, 0].size)
    print(
        f"pixels differing from the explorer's ({explorer.shape[1]}×{explorer.shape[0]}): "
        + ", ".join(f"{name} {100 * share:.3f} %" for name, share in differing.items())
    )
    assert all(share <= MAX_DIFFERING for share in differing.values()), differing
