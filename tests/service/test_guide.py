"""The documentation site at /guide/ of a live `heta serve`: a problem until it is built, then every
page renders in a real Chromium with every request that leaves the server blocked."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..test_docs import build
from .browser import OfflinePage
from .conftest import serve


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("guide")
    with serve(model_dir, folder, GUIDE_DIR=folder / "site") as running:
        running.site = folder / "site"
        yield running


def test_the_guide_is_a_problem_until_built_then_renders_offline(server, browser):
    missing = server.http.get("/guide/")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["code"] == "guide_not_built" and "mkdocs build" in missing.json()["detail"]

    done = build(Path(server.site))
    assert done.returncode == 0, done.stderr[-2000:]
    assert server.http.get("/guide").status_code in (200, 307)  # the directory, with or without its slash
    home = server.http.get("/guide/")
    assert home.status_code == 200 and home.headers["content-type"].startswith("text/html")
    assert server.http.get("/guide/../pyproject.toml").status_code == 404
    assert server.http.get("/guide/no-such-page.html").status_code == 404

    view = OfflinePage(browser, server.url)
    try:
        for path, heading in (
            ("/guide/", "HETA attribution service"),
            ("/guide/api.html", "The HTTP API"),
            ("/guide/reference.html", "Python reference"),
        ):
            view.page.goto(server.url + path)
            view.page.locator("h1", has_text=heading).first.wait_for(timeout=30_000)
        view.page.goto(server.url + "/guide/")
        # the home page is the README: its picture loads, and its links lead to the other pages
        assert view.page.evaluate("document.querySelector('img[src=\"explorer.png\"]').naturalWidth") > 0
        view.page.locator("article a[href='api.html']").first.click()
        view.page.locator("h2", has_text="Routes").first.wait_for(timeout=30_000)
        # search is built into the site (a local index, no service)
        view.page.goto(server.url + "/guide/index.html?q=idempotency")
        view.page.locator(".md-search-result__item").first.wait_for(timeout=30_000)
        view.shot("guide-search", full_page=False)
        assert view.blocked == [], f"requests left the server: {view.blocked}"
        assert view.errors == [], view.errors
    finally:
        view.close()
