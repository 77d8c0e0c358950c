"""The explorer page (GET /) in a real Chromium against live `heta serve` processes, for what
test_explorer.py leaves open: chat input and the message view, the bar chart of the HETA components'
shares, the colour contrast of the heatmap, and the 429 / 504 / 503 problems shown in words — each
problem caused for real (a tiny rate limit, a short job deadline, a SIGTERM), never a faked response.

Screenshots of each state go to $HETA_TEST_ARTEFACTS (default: a temporary folder; never committed),
named msg-*.png."""

import contextlib
import signal
import threading
import time

import pytest

from .browser import OfflinePage, luminance, people
from .conftest import serve
from .test_explorer import LONG, explained, ready, result_of, spans

RATE_LIMIT = 10  # requests per API key per minute on the limited server
DEADLINE_S = 3  # its job deadline: a job of samples=1000 misses it
KEYS = {"deadline": "k504", "rate": "k429", "drain": "k503"}  # one key per test: separate rate-limit counters
CHAT = [("user", "the cat sat on the mat ."), ("assistant", "the dog ate the")]
COMPONENTS = ("score", "flow", "hessian", "kl")
SHARES = ("flow", "hessian", "kl")  # the bar chart: M_T, S, I


@pytest.fixture(scope="module")
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


def alert(page, timeout: float = 60_000) -> str:
    page.wait_for_selector("#alert:not([hidden])", timeout=timeout)
    return page.text_content("#alert")


def contrast(foreground: str, background: str) -> float:
    """WCAG contrast ratio of two ``rgb(...)`` colours."""
    high, low = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def share_text(share: float | None) -> str:
    """The page's share format, written independently: a percent with one decimal (ties away from
    zero, as JavaScript's toFixed), "<0.1 %" for tiny ones."""
    from decimal import ROUND_HALF_UP, Decimal

    if share is None:
        return ""
    percent = 100 * share
    if percent != 0 and abs(percent) < 0.1:
        return "<0.1 %" if percent > 0 else ">−0.1 %"
    return f"{Decimal(percent).quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)}".replace("-", "−") + " %"


# ---------------------------------------------------------------------------------------- chat


def test_chat_messages_heatmap_and_message_view_equal_the_api_result(servers, open_page):
    server, model = servers["plain"], servers["model_dir"]
    view = open_page(server)
    page = view.page
    page.select_option("#model", model)  # heta-demo has no chat template: the tiny GPT-2 has one
    page.check("input[name='input-kind'][value='chat']")
    assert page.is_hidden("#text") and page.locator("#messages .message").count() == 1
    page.click("#add-message")
    rows = page.locator("#messages .message")
    for i, (role, content) in enumerate(CHAT):
        rows.nth(i).locator("select").select_option(role)
        rows.nth(i).locator("textarea").fill(content)
    page.fill("#target-text", " bone")
    view.shot("msg-01-chat-form", full_page=False)
    page.click("#explain")
    (job_id,) = explained(page)
    view.shot("msg-02-chat-token-heatmap")
    result = result_of(server, job_id)

    # the request was the two messages: the result's tokens carry their roles and message indices
    content = [t for t in result["tokens"] if not t["template"]]
    assert [t["text"] for t in content] == " ".join(text for _, text in CHAT).split()
    assert [(t["role"], t["message"]) for t in content] == [
        (role, i) for i, (role, text) in enumerate(CHAT) for _ in text.split()
    ]
    assert result["meta"]["model"] == model and result["targets"][0]["text"] == "bone"
    assert page.text_content("#results .hm-target-token") == "bone"

    # token view: every token span is the result's token, with the result's number, in every component
    for component in COMPONENTS:
        page.check(f"#results input[value='{component}']")
        shown = spans(page)
        assert [s["text"] for s in shown] == [t["text"] for t in result["tokens"]], component
        assert [float(s["value"]) for s in shown] == [t[component] for t in result["tokens"]], component
        assert [s["positions"] for s in shown] == [str(t["position"]) for t in result["tokens"]]

    # message view: one unit per message, from result.aggregates.message
    messages = result["aggregates"]["message"]
    assert [(m["role"], m["index"]) for m in messages] == [(role, i) for i, (role, _) in enumerate(CHAT)]
    views = page.eval_on_selector_all("#results .hm-view select option", "options => options.map(o => o.value)")
    assert views == ["token", "word", "sentence", "message"]
    page.select_option("#results .hm-view select", "message")
    for component in COMPONENTS:
        page.check(f"#results input[value='{component}']")
        shown = spans(page)
        assert [s["text"] for s in shown] == [f"{m['role']} message {m['index']}" for m in messages], component
        assert [float(s["value"]) for s in shown] == [m[component] for m in messages], component
        assert [s["positions"] for s in shown] == [" ".join(map(str, m["tokens"])) for m in messages]
        total = sum(abs(m[component]) for m in messages)
        assert [float(s["share"]) for s in shown] == pytest.approx([m[component] / total for m in messages], rel=1e-12)
    # hovering a message shows every number of it, formatted for people
    page.check("#results input[value='score']")
    page.hover("#results .hm-text .hm-unit >> nth=1")
    page.wait_for_selector("#results .hm-tooltip:not([hidden])")
    assert page.text_content("#results .hm-tip-where") == f"message 1 · {len(messages[1]['tokens'])} tokens · assistant"
    numbers = page.eval_on_selector_all(
        "#results .hm-tooltip tbody tr", "rows => rows.map(r => [r.dataset.component, r.cells[1].textContent])"
    )
    assert numbers == [[c, people(messages[1][c])] for c in COMPONENTS]
    view.shot("msg-03-chat-message-view")


# ---------------------------------------------------------------------------------------- bar chart


def bars(page) -> tuple[str, list[dict]]:
    """The bar chart's caption and bars, read at once (a hover redraws them)."""
    return page.eval_on_selector(
        "#results .hm-shares",
        "box => [box.querySelector('.hm-shares-unit').textContent, [...box.querySelectorAll('.hm-bar-row')].map(r => "
        "({component: r.dataset.component, label: r.querySelector('.hm-bar-label').textContent, share: "
        "r.querySelector('.hm-share').textContent, width: r.querySelector('.hm-bar-fill').style.width, drawn: "
        "r.querySelector('.hm-bar-fill').getBoundingClientRect().width / "
        "r.querySelector('.hm-bar').getBoundingClientRect().width}))]",
    )


def assert_bars(page, units: list[dict], index: int, over: str) -> None:
    """The bar chart shows, for the focused unit ``index``, its share of each HETA component's total
    over the view's units (heatmap.js drawShares: value / Σ|value|)."""
    label, shown = bars(page)
    assert label == f'"{units[index]["text"]}" holds this share of each term over the {over}:'
    assert [(b["component"], b["label"]) for b in shown] == [
        ("flow", "M_T (flow)"),
        ("hessian", "S (curvature)"),
        ("kl", "I (KL impact)"),
    ]
    for bar, component in zip(shown, SHARES, strict=True):
        total = sum(abs(u[component]) for u in units)
        share = units[index][component] / total
        assert bar["share"] == share_text(share), (component, bar, share)
        assert float(bar["width"].removesuffix("%")) == pytest.approx(100 * min(1, max(0, share)), rel=1e-5)
        assert bar["drawn"] == pytest.approx(min(1, max(0, share)), abs=0.01)


def test_component_share_bars_equal_the_result_fields(servers, open_page):
    server = servers["plain"]
    view = open_page(server)
    page = view.page
    page.click("#explain")  # the default heta-demo example
    (job_id,) = explained(page)
    result = result_of(server, job_id)
    tokens = result["tokens"]
    assert all(t[c] is not None for t in tokens for c in SHARES)
    # M_T is a share of the flow already: over the tokens it sums to 1
    assert sum(t["flow"] for t in tokens) == pytest.approx(1, abs=1e-6)
    # at first the bars are the top-scored token's (the darkest)
    top = min(range(len(tokens)), key=lambda i: (-tokens[i]["score"], i))
    assert_bars(page, tokens, top, "tokens")
    view.shot("msg-04-component-share-bars", full_page=False)
    # hovering another token shows its shares; so does the word view's top word
    page.hover("#results .hm-text .hm-unit >> nth=0")
    assert_bars(page, tokens, 0, "tokens")
    page.mouse.move(0, 0)  # off the text: the word view's first unit would be hovered when it is drawn
    page.select_option("#results .hm-view select", "word")
    words = result["aggregates"]["word"]
    assert_bars(page, words, min(range(len(words)), key=lambda i: (-words[i]["score"], i)), "words")
    page.hover("#results .hm-text .hm-unit >> nth=2")
    assert_bars(page, words, 2, "words")
    view.shot("msg-05-component-share-bars-word-view", full_page=False)


# ---------------------------------------------------------------------------------------- contrast


def span_contrasts(page, card: str) -> list[tuple[str, float]]:
    colours = page.eval_on_selector_all(
        f"{card} .hm-text .hm-unit",
        "units => units.map(u => [u.textContent, getComputedStyle(u).color, getComputedStyle(u).backgroundColor])",
    )
    assert colours
    return [(text, contrast(ink, paper)) for text, ink, paper in colours]


def test_heatmap_text_contrast_is_at_least_4_5(servers, open_page):
    server = servers["plain"]
    view = open_page(server)
    page = view.page
    page.click("#examples button:has-text('integrated gradients')")  # sequential (HETA) and diverging (IG) scales
    explained(page, count=2)
    checked, lowest = 0, float("inf")
    for method in ("heta", "integrated_gradients"):
        card = f"#results .result[data-method='{method}']"
        components = page.eval_on_selector_all(
            f"{card} .hm-components input", "inputs => inputs.map(i => i.value)"
        ) or ["score"]
        granularities = page.eval_on_selector_all(
            f"{card} .hm-view select option", "options => options.map(o => o.value)"
        )
        for component in components:
            if component != "score" or len(components) > 1:
                page.check(f"{card} input[value='{component}']")
            for granularity in granularities:
                page.select_option(f"{card} .hm-view select", granularity)
                ratios = span_contrasts(page, card)
                assert [(text, round(ratio, 2)) for text, ratio in ratios if ratio < 4.5] == [], (
                    method,
                    component,
                    granularity,
                )
                lowest = min(lowest, *(ratio for _, ratio in ratios))
                checked += 1
    assert checked == 4 * 3 + 1 * 3  # HETA: 4 components × 3 views; IG: its score × 3 views
    view.shot("msg-06-contrast-heta-vs-ig")
    print(f"heatmap spans: lowest text contrast {lowest:.3f}")


def test_every_colour_of_the_scale_has_text_contrast_of_at_least_4_5(servers, open_page):
    """The whole colour scale, not only the values one result happened to have: each background the
    renderer (window.HetaAttribution.colour, as the page loads it) can give a unit, with the text colour
    it picks for it, as the browser computes them — sequential (0..1) and diverging (−1..1)."""
    view = open_page(servers["plain"])
    sweep = view.page.evaluate(
        """() => {
          const probe = document.createElement("span");
          document.body.append(probe);
          const out = [];
          for (const signed of [false, true]) {
            for (let i = signed ? -1000 : 0; i <= 1000; i++) {
              const c = HetaAttribution.colour(i / 1000, 1, signed);
              probe.style.cssText = `background-color: ${c.css}; color: ${c.text}`;
              const style = getComputedStyle(probe);
              out.push([i / 1000, signed, style.color, style.backgroundColor]);
            }
          }
          probe.remove();
          return out;
        }"""
    )
    assert len(sweep) == 1001 + 2001
    ratios = [(value, signed, ink, paper, contrast(ink, paper)) for value, signed, ink, paper in sweep]
    low = [(*r[:4], round(r[4], 2)) for r in ratios if r[4] < 4.5]
    assert low == [], (
        f"{len(low)} of {len(sweep)} scale colours have a text contrast below 4.5, e.g. {low[:: max(1, len(low) // 6)]}"
    )
    print(f"scale: lowest text contrast {min(r[4] for r in ratios):.3f}")


# ---------------------------------------------------------------------------------------- problems


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_rate_limit_429_is_shown_with_the_retry_time(servers, open_page):
    server = servers["limited"]
    view = open_page(server, KEYS["rate"])
    page = view.page
    message = None
    for clicks in range(1, 11):  # noqa: B007 - read after the loop. Each Explain is a POST /jobs, its event stream and a queue refresh
        before = time.time()
        page.click("#explain")
        page.wait_for_function("!document.querySelector('#explain').disabled", timeout=60_000)
        after = time.time()
        if page.is_visible("#alert") and "(429 " in page.text_content("#alert"):
            message = page.text_content("#alert")
            break
    assert message is not None, "the rate limit never answered 429"
    assert clicks >= 2
    view.shot("msg-07-rate-limited-429")
    prefix = f"Too many requests (429 rate_limited): more than {RATE_LIMIT} requests this minute. Try again in "
    assert message.startswith(prefix) and message.endswith(" s."), message
    seconds = int(message.removeprefix(prefix).removesuffix(" s."))
    # the server's Retry-After is the rest of its counting minute (+1 s), at the moment it refused
    retry = lambda t: int(60 - t % 60) + 1  # noqa: E731
    if int(before // 60) == int(after // 60):
        assert retry(after) <= seconds <= retry(before), (seconds, before, after)
    else:
        assert seconds >= retry(after) or seconds <= retry(before), (seconds, before, after)
    status = page.text_content("#runs .job-status")
    print(f"429 after {clicks} clicks: {message!r} (job panel: {status})")
    if status.startswith("refused"):  # the POST itself was refused (else the event stream was)
        assert status == "refused (429)"


def explain_long_job(page) -> None:
    """Asks for a job (samples=1000) longer than the limited server's deadline."""
    page.fill("#text", LONG)
    page.fill("#target-text", " 2")
    page.click("#options summary")
    page.fill("#samples", "1000")
    page.click("#explain")


def test_job_deadline_504_is_shown_in_words(servers, open_page):
    server = servers["limited"]
    view = open_page(server, KEYS["deadline"])
    page = view.page
    started = time.monotonic()
    explain_long_job(page)
    message = alert(page)
    seconds = time.monotonic() - started
    view.shot("msg-08-deadline-504")
    assert message == (
        "The job missed its deadline (504 deadline_exceeded): the job did not finish before its deadline. "
        "Ask for less work (fewer samples, low rank, a window) or a longer deadline."
    )
    assert page.text_content("#runs .job-status") == "failed"
    assert page.locator("#results .result").count() == 0
    job_id = page.get_attribute("#runs .job", "data-job-id")
    job = server.http.get(f"/jobs/{job_id}", headers=auth(KEYS["deadline"])).json()
    assert job["status"] == "failed" and job["error"]["code"] == "deadline_exceeded"
    assert DEADLINE_S - 0.5 < seconds < DEADLINE_S + 30
    print(f"504 shown {seconds:.1f} s after Explain")


def test_shutdown_503_is_shown_in_words(servers, open_page):
    """Last: it stops the limited server (SIGTERM to the `heta serve` this module started)."""
    server = servers["limited"]
    view = open_page(server, KEYS["drain"])
    page = view.page
    explain_long_job(page)
    page.wait_for_selector(
        "#runs .job[data-job-id] .job-status:is([data-status='queued'], [data-status='running'])", timeout=30_000
    )
    job_id = page.get_attribute("#runs .job", "data-job-id")
    (proc,) = server.procs
    proc.send_signal(signal.SIGTERM)  # the server drains: its event streams end with a 503 problem
    message = alert(page)
    view.shot("msg-09-draining-503")
    # whichever reaches the page first: the job's event stream ending with its problem, or the drain
    # gate's 503 (with Retry-After) on another request the page makes meanwhile (the queue panel's refresh)
    assert message in (
        "The service is unavailable (503 draining): the server is shutting down; reconnect.",
        "The service is unavailable (503 draining): the server is shutting down. Try again in 5 s.",
    )
    page.wait_for_function("document.querySelector('#runs .job-status').textContent === 'interrupted'", timeout=30_000)
    assert page.get_attribute("#runs .job", "data-job-id") == job_id
    assert proc.wait(timeout=60) == 0  # a graceful shutdown
