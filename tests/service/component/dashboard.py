"""A dashboard's side of the component tests: its API key, the live jobs it asks for, and the bare
element on a page of its own site, with what the element draws."""

from pathlib import Path

from ...helpers import ROOT

PACKAGE = ROOT / "clients" / "typescript"
HOSTS = Path(__file__).resolve().parents[1] / "hosts"
KEY = "dash-key"
PROMPT = "c=6 e=6 b=3 h=3 m=6 ? h"
AUTH = {"Authorization": f"Bearer {KEY}"}


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
