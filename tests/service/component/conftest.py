"""The dashboard's web server (another origin than the API), the live `heta serve` it reaches, and pages
that may reach only those two, for every module of the package."""

import functools
import http.server
import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from heta_core.results.report import ASSETS

from ..browser import (
    OfflinePage,
    package_browser,  # noqa: F401 - registers the package's `browser` fixture
)
from ..conftest import free_port, serve
from .dashboard import BARE, HOSTS, KEY, PACKAGE


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


@pytest.fixture(scope="package")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dashboard")
    shutil.copy(ASSETS / "heta-attribution.js", folder)
    (folder / "bare.html").write_text(BARE)
    build_react_host(folder)
    running = HostSite(folder)
    running.folder = folder
    yield running
    running.close()


@pytest.fixture(scope="package")
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
