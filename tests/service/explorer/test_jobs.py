"""A job's life in the explorer, in a real Chromium with every request that leaves the server blocked:
the progress of a long job rises and cancel stops it, a HETA heatmap is drawn at its first partial result
and refined in place, and a refused request is shown in words in a narrow window.

Screenshots of each state go to $HETA_TEST_ARTEFACTS (default: a temporary folder; never committed)."""

import time

from ..browser import LONG, explained, no_horizontal_scroll, ready, result_of, spans


def ask_long(page, samples: int) -> float:
    """Asks for LONG's answer with ``samples`` Hessian samples (seconds of work); when it was asked."""
    ready(page)
    page.fill("#text", LONG)
    page.fill("#target-text", " 2")
    page.click("#options summary")
    page.fill("#samples", str(samples))
    started = time.monotonic()
    page.click("#explain")
    return started


def test_long_job_progress_rises_and_cancel_stops_it(server, offline):
    view = offline()
    page = view.page
    started = ask_long(page, 5000)
    page.wait_for_selector("#runs .job[data-job-id]")
    job_id = page.get_attribute("#runs .job", "data-job-id")
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len({v for v in seen if v > 0}) < 2:
        seen.append(float(page.eval_on_selector("#runs progress", "p => p.value")))
        time.sleep(0.1)
    rising = [v for v in seen if v > 0]
    assert len(set(rising)) >= 2 and rising == sorted(rising) and rising[-1] < 1, seen
    view.shot("04-long-job-progress", full_page=False)
    rose = time.monotonic() - started
    page.click("#runs button.cancel")
    page.wait_for_selector("#runs .job-status[data-status='cancelled']", timeout=60_000)
    print(
        f"long job: progress rose to {rising[-1]:.2f} after {rose:.1f} s; cancelled "
        f"{time.monotonic() - started - rose:.1f} s later"
    )
    assert page.text_content("#runs .job-status") == "cancelled"
    assert "cancelled" in page.text_content("#alert")
    view.shot("05-long-job-cancelled", full_page=False)
    assert server.http.get(f"/jobs/{job_id}").json()["status"] == "cancelled"


def test_a_heta_heatmap_is_drawn_at_its_first_partial_and_refined_in_place(server, offline):
    """Flow + KL first ("curvature still running", the trust line waiting), then the final result in the
    same card, with the component the reader chose kept."""
    view = offline()
    page = view.page
    started = ask_long(page, 1500)  # several seconds of Hessian work on heta-demo
    page.wait_for_selector("#results .result[data-partial='flow,kl'] .hm-unit", timeout=120_000)
    first = time.monotonic() - started
    job_id = page.get_attribute("#results .result", "data-job-id")
    partial = server.http.get(f"/jobs/{job_id}").json()["partial"]
    assert partial["stages_done"] == ["flow", "kl"] and partial["partial"] is True
    assert page.text_content("#results .hm-partial") == (
        "Partial result: flow + KL impact, curvature still running — this map is refined in place when the job ends."
    )
    assert page.text_content("#results .hm-trust-pending").startswith("Waiting for the final result")
    assert [float(s["value"]) for s in spans(page)] == [t["score"] for t in partial["tokens"]]
    # the terms known so far can be shown; the curvature is not offered yet
    offered = page.eval_on_selector_all("#results .hm-components input", "inputs => inputs.map(i => i.value)")
    assert offered == ["score", "flow", "kl"]
    page.check("#results .hm-components input[value='kl']")
    page.evaluate("document.querySelector('#results .result').marker = 'same card'")
    view.shot("14-partial-heatmap", full_page=False)
    (final_id,) = explained(page)
    total = time.monotonic() - started
    assert final_id == job_id and page.evaluate("document.querySelector('#results .result').marker") == "same card"
    result = result_of(server, job_id)
    assert page.locator("#results .hm-partial").count() == 0 and page.locator("#results .hm-trust-pending").count() == 0
    assert page.is_checked("#results .hm-components input[value='kl']")  # the reader's choice survives the refinement
    assert [float(s["value"]) for s in spans(page)] == [t["kl"] for t in result["tokens"]]
    page.check("#results .hm-components input[value='score']")
    assert [float(s["value"]) for s in spans(page)] == [t["score"] for t in result["tokens"]]
    view.shot("15-partial-refined", full_page=False)
    print(f"partial heatmap after {first:.2f} s, final after {total:.2f} s")
    assert first < total


def test_problems_are_shown_in_words_and_the_page_fits_a_narrow_window(server, offline):
    view = offline(width=390, height=844)
    page = view.page
    ready(page)
    page.click("#options summary")
    page.fill("#samples", "100000")
    page.click("#explain")
    page.wait_for_selector("#alert:not([hidden])")
    message = page.text_content("#alert")
    assert message.startswith("The request cannot be run (422 ") and "samples" in message
    assert page.text_content("#runs .job-status") == "refused (422)"
    assert no_horizontal_scroll(page)
    view.shot("09-narrow-422-message")
    page.fill("#samples", "10")
    page.click("#explain")
    explained(page)
    assert no_horizontal_scroll(page)
    view.shot("10-narrow-result")
