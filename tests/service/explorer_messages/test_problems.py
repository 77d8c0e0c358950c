"""The 429 / 504 / 503 problems shown in words by the explorer, in a real Chromium — each problem caused
for real (a tiny rate limit, a short job deadline, a SIGTERM), never a faked response."""

import signal
import time

from ..browser import LONG
from ..conftest import serve
from .conftest import DEADLINE_S, KEYS, RATE_LIMIT


def alert(page, timeout: float = 60_000) -> str:
    page.wait_for_selector("#alert:not([hidden])", timeout=timeout)
    return page.text_content("#alert")


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


def test_shutdown_503_is_shown_in_words(open_page, tmp_path):
    """A server of its own (the SIGTERM ends it) with the default job deadline: on the limited server the
    3 s deadline raced the drain, and under load the job could fail by its deadline before the page saw
    the server drain (its card then read "failed")."""
    # DRAIN_S: the worker gives the long job back at once rather than run it 30 s more
    with serve(None, tmp_path, API_KEYS=KEYS["drain"], DRAIN_S=1) as server:
        view = open_page(server, KEYS["drain"])
        page = view.page
        explain_long_job(page)
        page.wait_for_selector(
            "#runs .job[data-job-id] .job-status:is([data-status='queued'], [data-status='running'])",
            timeout=30_000,
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
        try:
            page.wait_for_function(
                "document.querySelector('#runs .job-status').textContent === 'interrupted'", timeout=30_000
            )
        except Exception as error:
            raise AssertionError(f"the job's card reads {page.text_content('#runs .job-status')!r}") from error
        assert page.get_attribute("#runs .job", "data-job-id") == job_id
        assert proc.wait(timeout=60) == 0  # a graceful shutdown
