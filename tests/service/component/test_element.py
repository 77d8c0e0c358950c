"""The bare <heta-attribution> given a result: the matrix of each target and the trust table drawn and
themed from outside; a malformed document shown as a readable error in place; and the explorer, the
HTML report and the bare element draw the same pixels for one result."""

import json

import numpy as np
from PIL import Image

from ..browser import artefacts
from .dashboard import AUTH, KEY, PROMPT, final_result, open_bare, submit, wait_final

# a pixel differs when a channel differs by more than this (anti-aliasing of one glyph edge is ~100+)
CHANNEL_TOLERANCE = 24
MAX_DIFFERING = 0.005  # of the element's pixels


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
