"""The two servers of the package's tests, started side by side, and their offline pages."""

import contextlib
import threading

import pytest

from ..browser import (
    OfflinePage,
    package_browser,  # noqa: F401 - registers the package's `browser` fixture
    ready,
)
from ..conftest import serve

RATE_LIMIT = 10  # requests per API key per minute on the limited server
DEADLINE_S = 3  # its job deadline: a job of samples=1000 misses it
KEYS = {"deadline": "k504", "rate": "k429", "drain": "k503"}  # one key per test: separate rate-limit counters


@pytest.fixture(scope="package")
def servers(model_dir, tmp_path_factory):
    """Two live servers, started side by side: ``plain`` serves heta-demo (the default) and a tiny
    GPT-2 with a chat template; ``limited`` serves heta-demo with API keys, a tiny rate limit and a
    short job deadline."""
    plain_dir, limited_dir = tmp_path_factory.mktemp("messages-plain"), tmp_path_factory.mktemp("messages-limited")
    with contextlib.ExitStack() as stack:
        started, failures = {}, []

        def start(name, manager):
            try:
                started[name] = stack.enter_context(manager)
            except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread below
                failures.append(error)

        threads = [
            threading.Thread(target=start, args=("plain", serve(f"heta-demo,{model_dir}", plain_dir))),
            threading.Thread(
                target=start,
                args=(
                    "limited",
                    serve(
                        None,
                        limited_dir,
                        API_KEYS=",".join(KEYS.values()),
                        RATE_LIMIT_PER_MINUTE=RATE_LIMIT,
                        JOB_DEADLINE_S=DEADLINE_S,
                    ),
                ),
            ),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        started["model_dir"] = model_dir
        yield started


@pytest.fixture
def open_page(browser):
    pages = []

    def opened(server, key: str | None = None, **size) -> OfflinePage:
        view = OfflinePage(browser, server.url, **size)
        pages.append(view)
        if key is not None:  # as if the key had been entered in the page's dialog: kept in session storage
            view.page.add_init_script(f"sessionStorage.setItem('heta-api-key', {key!r})")
        view.page.goto(server.url + "/")
        ready(view.page)
        return view

    yield opened
    for view in pages:
        assert view.blocked == [], f"requests left the server: {view.blocked}"
        assert view.errors == [], f"the page raised: {view.errors}"
        view.close()
