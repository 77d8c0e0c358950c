"""What the caller gave, as one annotated token sequence.

A :class:`Document` holds the token ids and, per token, its character span in ``text`` (when a
fast tokenizer gives offsets), the chat message it belongs to and that message's role, and whether
it is template scaffolding (outside every message's content) or a special token.

Chat input is rendered with the tokenizer's chat template. Message k's content is located in the
rendered text (searching forward from message k−1); a token belongs to the message whose segment
(from the end of the previous content to the end of its own) holds the token's first character, so
role headers belong to the message they introduce; tokens after the last content (the generation
prompt) belong to none. Template and special tokens are flagged.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..errors import InputError

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Document:
    ids: list[int]
    offsets: list[tuple[int, int] | None]
    text: str | None = None
    messages: list[int | None] = field(default_factory=list)
    roles: list[str | None] = field(default_factory=list)
    template: list[bool] = field(default_factory=list)
    special: list[bool] = field(default_factory=list)
    message_roles: list[str] = field(default_factory=list)

    def __post_init__(self):
        size = len(self.ids)
        for name in ("messages", "roles"):
            if not getattr(self, name):
                object.__setattr__(self, name, [None] * size)
        for name in ("template", "special"):
            if not getattr(self, name):
                object.__setattr__(self, name, [False] * size)

    def truncated(self, length: int) -> Document:
        return replace(
            self,
            ids=self.ids[:length],
            offsets=self.offsets[:length],
            messages=self.messages[:length],
            roles=self.roles[:length],
            template=self.template[:length],
            special=self.special[:length],
        )

    def extended(self, ids: list[int], text: str | None, offsets: list[tuple[int, int] | None]) -> Document:
        """This document followed by more tokens (a target span); ``text`` is appended to ``self.text``."""
        size = len(ids)
        return Document(
            ids=self.ids + ids,
            offsets=self.offsets + offsets,
            text=None if self.text is None or text is None else self.text + text,
            messages=self.messages + [None] * size,
            roles=self.roles + [None] * size,
            template=self.template + [False] * size,
            special=self.special + [False] * size,
            message_roles=self.message_roles,
        )


def _special_ids(tokenizer) -> set[int]:
    return set(getattr(tokenizer, "all_special_ids", []) or [])


def _offsets(encoded, size: int, shift: int = 0) -> list[tuple[int, int] | None]:
    mapping = encoded.get("offset_mapping") if hasattr(encoded, "get") else None
    if mapping is None:
        return [None] * size
    return [(int(a) + shift, int(b) + shift) for a, b in mapping]


def check_unicode(text: str, what: str) -> None:
    """Refuse text that is not valid Unicode (a lone UTF-16 surrogate, which JSON's ``\\ud800``
    escapes can carry): tokenizers cannot encode it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InputError(
            f"{what} is not valid Unicode: a lone surrogate {text[error.start]!r} at character {error.start}",
            code="invalid_text",
        ) from None


def encode_text(tokenizer, text: str, *, special_tokens: bool = True, shift: int = 0) -> tuple[list[int], list]:
    """Token ids and character offsets (shifted by ``shift``) of ``text``."""
    try:
        encoded = tokenizer(text, return_offsets_mapping=True, add_special_tokens=special_tokens)
    except (NotImplementedError, ValueError, KeyError):  # slow tokenizers have no offsets
        encoded = tokenizer(text, add_special_tokens=special_tokens)
    ids = list(encoded["input_ids"])
    return ids, _offsets(encoded, len(ids), shift)


def encode_piece(tokenizer, text, what: str, empty_code: str, shift: int = 0) -> tuple[list[int], list]:
    """A caller's piece of text appended to or compared with the prompt (``target_text``, ``foil_text``):
    a non-empty valid string, tokenized without special tokens (they belong to a prompt's start)."""
    if not isinstance(text, str) or not text:
        raise InputError(f"{what} must be a non-empty string", code=empty_code)
    if tokenizer is None:
        raise InputError(f"{what} needs a tokenizer", code="no_tokenizer")
    check_unicode(text, what)
    return encode_text(tokenizer, text, special_tokens=False, shift=shift)


def from_text(tokenizer, text) -> Document:
    if not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}")
    if tokenizer is None:
        raise InputError("text input needs a tokenizer; pass input_ids instead", code="no_tokenizer")
    if not text.strip():
        raise InputError("text is empty", code="empty_input")
    check_unicode(text, "text")
    ids, offsets = encode_text(tokenizer, text)
    special = _special_ids(tokenizer)
    return Document(ids, offsets, text, special=[i in special for i in ids])


def from_messages(tokenizer, messages) -> Document:
    if tokenizer is None:
        raise InputError("chat messages need a tokenizer", code="no_tokenizer")
    if not isinstance(messages, (list, tuple)) or not messages:
        raise InputError("messages must be a non-empty list of {role, content} objects", code="empty_input")
    for k, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) - {"role", "content"} or "role" not in message:
            raise InputError(f"message {k} must be an object with 'role' and 'content'", code="invalid_messages")
        if message["role"] not in ROLES:
            raise InputError(
                f"message {k} has unknown role {message['role']!r}; allowed: {', '.join(ROLES)}",
                code="invalid_messages",
            )
        if not isinstance(message.get("content"), str) or not message["content"].strip():
            raise InputError(f"message {k} has empty content", code="empty_input")
        check_unicode(message["content"], f"message {k}'s content")
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("the tokenizer has no chat template; pass text instead", code="no_chat_template")
    rendered = tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=messages[-1]["role"] != "assistant"
    )
    contents, cursor = [], 0
    for k, message in enumerate(messages):
        content = message["content"]
        start = rendered.find(content, cursor)
        if start < 0:
            content = content.strip()
            start = rendered.find(content, cursor)
        if start < 0:
            raise InputError(f"cannot locate message {k} in the rendered chat template", code="invalid_messages")
        contents.append((start, start + len(content)))
        cursor = start + len(content)

    # the template already holds BOS etc.: do not add special tokens twice
    ids, offsets = encode_text(tokenizer, rendered, special_tokens=False)
    special_set = _special_ids(tokenizer)
    owner, role, template = [], [], []
    for offset in offsets:
        first = offset[0] if offset is not None and offset[1] > offset[0] else None
        message = None
        if first is not None:
            message = next((k for k, (_, end) in enumerate(contents) if first < end), None)
        inside = first is not None and any(a <= first < b for a, b in contents)
        owner.append(message)
        role.append(messages[message]["role"] if message is not None else None)
        template.append(not inside)
    return Document(
        ids, offsets, rendered, owner, role, template, [i in special_set for i in ids], [m["role"] for m in messages]
    )


def unknown_words(doc: Document, tokenizer) -> tuple[int, list[str]]:
    """(count, distinct words in order) of the tokens the tokenizer mapped to its unknown token.

    A token whose own text is the unknown-token string itself (a literal "[UNK]" or GPT-2's
    "<|endoftext|>", which doubles as its unk) was written by the caller and is not counted.
    """
    unk = getattr(tokenizer, "unk_token_id", None) if tokenizer is not None else None
    if unk is None:
        return 0, []
    count, words = 0, []
    for token_id, offset in zip(doc.ids, doc.offsets, strict=True):
        if token_id != unk:
            continue
        word = doc.text[offset[0] : offset[1]].strip() if doc.text is not None and offset is not None else ""
        if word == tokenizer.unk_token:
            continue
        count += 1
        if word and word not in words:
            words.append(word)
    return count, words
