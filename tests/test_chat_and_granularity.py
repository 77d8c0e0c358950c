"""Chat messages, char offsets, and aggregation to words / sentences / spans / messages."""

import pytest

from heta_core import InputError
from heta_core.inputs.document import from_text
from heta_core.inputs.granularity import segments

MESSAGES = [
    {"role": "system", "content": "the answer is four ."},
    {"role": "user", "content": "the cat sat on the mat ."},
]
TEXT = "the cat sat on the mat. the dog ate the bone. a bird can fly"


def test_chat_tokens_carry_message_role_and_template_flags(make_attributor):
    result = make_attributor("llama", num_hvp_samples=2).attribute(messages=MESSAGES, target_text=" the answer")
    rendered = result.text
    assert rendered.startswith("[SYSTEM] the answer is four . [END] [USER] the cat")
    assert rendered.endswith("[ASSISTANT]  the answer")
    by_message = {}
    for token in result.tokens:
        assert rendered[token.start : token.end] == token.text
        if token.template:
            assert token.text in {"[SYSTEM]", "[USER]", "[ASSISTANT]", "[END]"} and token.special
        else:
            by_message.setdefault(token.message, []).append(token.text)
            assert token.role == MESSAGES[token.message]["role"]
    assert by_message == {k: m["content"].split() for k, m in enumerate(MESSAGES)}
    headers = [t for t in result.tokens if t.text in {"[SYSTEM]", "[USER]"}]
    assert [t.message for t in headers] == [0, 1]  # a header belongs to the message it introduces


def test_message_scores_sum_to_the_token_scores(make_attributor):
    attributor = make_attributor("gpt2", num_hvp_samples=2)
    result = attributor.attribute(messages=MESSAGES, target_text=" the answer")
    messages = result.aggregates["message"]
    assert [m.role for m in messages] == ["system", "user"]
    content = [t.position for t in result.tokens if not t.template and not t.special]
    for name, tensor in (
        ("score", result.scores),
        ("flow", result.flow),
        ("hessian", result.hessian),
        ("kl", result.kl),
    ):
        assert sum(getattr(m, name) for m in messages) == pytest.approx(float(tensor[content].double().sum()), rel=1e-6)
    with_template = attributor.attribute(messages=MESSAGES, target_text=" the answer", include_template=True)
    owned = [t.position for t in with_template.tokens if t.message is not None]
    assert sum(m.score for m in with_template.aggregates["message"]) == pytest.approx(
        float(with_template.scores[owned].double().sum()), rel=1e-6
    )
    assert len(owned) > len(content)


@pytest.mark.parametrize(
    "messages, code, words",
    [
        ([], "empty_input", "non-empty list"),
        ("hello", "empty_input", "non-empty list"),
        ([{"role": "wizard", "content": "the cat"}], "invalid_messages", "unknown role 'wizard'"),
        ([{"role": "user", "content": "  "}], "empty_input", "empty content"),
        ([{"role": "user"}], "empty_input", "empty content"),
        ([{"content": "the cat"}], "invalid_messages", "'role'"),
        ([{"role": "user", "content": "the cat", "name": "x"}], "invalid_messages", "'role' and 'content'"),
    ],
)
def test_bad_messages(make_attributor, messages, code, words):
    with pytest.raises(InputError) as error:
        make_attributor("gpt2").attribute(messages=messages, target_text=" the")
    assert error.value.code == code and words in str(error.value)


def test_tokenizer_without_chat_template(make_attributor, tokenizer):
    attributor = make_attributor("gpt2")
    template, tokenizer.chat_template = tokenizer.chat_template, None
    try:
        with pytest.raises(InputError, match="no chat template"):
            attributor.attribute(messages=MESSAGES)
    finally:
        tokenizer.chat_template = template


def test_words_and_sentences_sum_member_tokens(make_attributor):
    result = make_attributor("qwen2", num_hvp_samples=2).attribute(
        TEXT.replace(".", " ."), granularity=["word", "sentence"]
    )
    text = result.text
    for token in result.tokens:
        assert text[token.start : token.end] == token.text
    words = result.aggregates["word"]
    assert [w.text for w in words] == text.split()[:-1]  # the last word is the target
    for w in words:
        assert w.score == pytest.approx(float(result.scores[w.tokens].double().sum()), rel=1e-9)
    sentences = result.aggregates["sentence"]
    assert [s.text for s in sentences] == ["the cat sat on the mat .", "the dog ate the bone .", "a bird can"]
    for name, tensor in (
        ("score", result.scores),
        ("kl", result.kl),
        ("hessian", result.hessian),
        ("flow", result.flow),
    ):
        assert sum(getattr(s, name) for s in sentences) == pytest.approx(float(tensor.double().sum()), rel=1e-6)


def test_word_membership_uses_the_first_visible_character(tokenizer):
    doc = from_text(tokenizer, "the cat sat")
    shifted = doc.__class__(doc.ids, [(0, 3), (3, 7), (7, 11)], doc.text)  # GPT-2 style " cat", " sat"
    assert [s.tokens for s in segments(shifted, 3, "word")] == [[0], [1], [2]]


def test_caller_spans_and_each_mode_rows(make_attributor):
    attributor = make_attributor("gpt2", num_hvp_samples=1)
    prompt = "paris is the capital of"
    result = attributor.attribute(
        prompt, target_text=" france .", target_mode="each", spans=[(0, 5), (6, 15)], granularity="word"
    )
    first, second = result.aggregates["span"]
    assert (first.text, first.tokens) == ("paris", [0])
    assert second.text == "is the ca" and second.tokens == [1, 2, 3]  # overlap counts
    assert len(first.score) == 2  # one entry per target token in "each" mode
    assert first.score == pytest.approx(result.scores[:, 0].tolist())
    assert len(result.aggregates["word"]) == 5


@pytest.mark.parametrize(
    "spans, words", [([(0, 500)], "outside the text"), ([(4, 4)], "empty"), ([(1, "x")], "pair of integers")]
)
def test_bad_spans(make_attributor, spans, words):
    with pytest.raises(InputError, match=words):
        make_attributor("gpt2").attribute("paris is the capital of", spans=spans)


def test_granularity_needs_offsets(make_attributor):
    with pytest.raises(InputError, match="offsets"):
        make_attributor("gpt2").attribute(input_ids=[4, 5, 6], granularity="word")
    with pytest.raises(InputError, match="granularity must be one of"):
        make_attributor("gpt2").attribute("the cat sat", granularity="paragraph")
