"""Real Chromium for the explorer's tests: Debian's binary driven by Playwright (its own browser
download cannot work offline), with every request that leaves the test server blocked and recorded;
reading the explorer page (its results, their heatmaps) and the page's number formats."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def artefacts() -> Path:
    """Where screenshots go: $HETA_TEST_ARTEFACTS, else a fresh temporary folder (never the repository)."""
    configured = os.environ.get("HETA_TEST_ARTEFACTS")
    folder = Path(configured) if configured else Path(tempfile.gettempdir()) / "heta-explorer-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def chromium():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="package", name="browser")
def package_browser():
    """`browser` for a package of page tests that were one module (a package's conftest imports this):
    one Chromium for its modules, as the module had, where tests/service/conftest.py's is one per module."""
    with chromium() as launched:
        yield launched


class OfflinePage:
    """A page in its own context that may reach only ``allowed`` (scheme://host:port) and file:// URLs;
    every other request is aborted and kept in ``blocked``, so a test can assert there were none."""

    def __init__(self, browser, allowed: str | None, width: int = 1280, height: int = 800):
        self.context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.allowed = allowed
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _route(self, route):
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("file", "data", "blob") or (
            self.allowed and f"{parts.scheme}://{parts.netloc}" == self.allowed
        ):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("internetdisconnected")

    def shot(self, name: str, full_page: bool = True) -> Path:
        path = artefacts() / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def close(self) -> None:
        self.context.close()


def luminance(css: str) -> float:
    """Relative luminance (WCAG) of an ``rgb(r, g, b)`` colour."""
    r, g, b = (int(v) / 255 for v in re.findall(r"\d+", css)[:3])
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


SUPERSCRIPTS = str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789")


def parse_number(shown: str) -> float:
    """A number as the page shows it ("6.35", "1.9 × 10⁻⁷", "−3.2 %") back to a float."""
    shown = shown.replace("−", "-").replace("%", "").strip()
    if "×" in shown:
        mantissa, power = shown.split("×")
        return float(mantissa) * 10 ** int(power.strip().removeprefix("10").translate(SUPERSCRIPTS))
    return float(shown)


def people(value: float) -> str:
    """The page's number format, written independently: 3 significant digits, m × 10ⁿ outside [0.001, 1e5)."""
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e5:
        return repr(float(f"{value:.3g}")).removesuffix(".0")
    mantissa, exponent = f"{value:.2e}".split("e")
    exponent = str(int(exponent)).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))
    return f"{float(mantissa):g} × 10{exponent}"


def probability(p: float) -> str:
    """The page's probability format: 3 significant digits with trailing zeros (1.00, 0.940), tiny ones as m × 10ⁿ."""
    return f"{p:#.3g}" if abs(p) >= 1e-3 else people(p)


# ---------------------------------------------------------------------------------------- the explorer page

# the prompt of the long jobs the tests watch, cancel, see refined or let miss a deadline
LONG = "a=2 d=5 g=2 k=9 n=5 p=9 c=4 e=4 ? g"


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
