"""Chat input and the message view of the explorer, in a real Chromium: the heatmap of a chat's tokens
and of its messages are the API's result, every number of a message shown for people."""

import pytest

from ..browser import explained, people, result_of, spans

CHAT = [("user", "the cat sat on the mat ."), ("assistant", "the dog ate the")]
COMPONENTS = ("score", "flow", "hessian", "kl")


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
