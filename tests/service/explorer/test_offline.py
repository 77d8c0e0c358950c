"""What the explorer gives with nothing else reachable, in a real Chromium: its exports (JSON, the HTML
report, PNG), the report opened from disk, and /docs and /redoc.

Screenshots of each state go to $HETA_TEST_ARTEFACTS (default: a temporary folder; never committed)."""

import json
import struct

from ..browser import explained, ready, spans


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
