"""The explorer's server and its offline pages, for every module of the package."""

import pytest

from ..browser import (
    OfflinePage,
    package_browser,  # noqa: F401 - registers the package's `browser` fixture
)
from ..conftest import serve


@pytest.fixture(scope="package")
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
