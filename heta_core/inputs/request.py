"""The attribution request: the one definition of what a caller may ask to be explained.

Every front door derives its request from :class:`AttributionRequest`: ``Attributor.attribute`` /
``estimate`` take its fields as keyword arguments (a test holds their signatures to it), the HTTP
bodies subclass it (adding the model, ``config`` and the wait), a JSONL line of ``heta attribute
--input`` is one of its bodies, and the CLI's flags are checked against it. Its JSON schema is
what generated clients (the TypeScript client) see, so it says what a schema can: non-empty lists,
bounds, enumerations. What only the model can decide (the vocabulary, the prompt's token count, a
chat template) stays with admission.

Two arguments are Python-only (:data:`PYTHON_ONLY`): ``attention_mask`` (a tokenizer's padding,
meaningless in JSON) and ``granularity`` (over HTTP and JSONL it is a ``config`` field).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TargetMode = Literal["sum", "each"]
PYTHON_ONLY = ("attention_mask", "granularity")


class Message(BaseModel):
    """One chat message, rendered with the model's chat template."""

    model_config = ConfigDict(extra="forbid")
    role: str = Field(description="system, user, assistant or tool")
    content: str


class AttributionRequest(BaseModel):
    """What to explain: exactly one input (``text``, ``input_ids`` or ``messages``) and at most one
    target form (``target_position``, ``target_text``, ``response_ids``, ``generate``)."""

    # NaN and ±inf are refused (JSON parsers accept NaN/Infinity literals)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    text: str | None = Field(None, description="the prompt; its last token is the target unless a target is given")
    input_ids: list[int] | None = Field(None, min_length=1, description="the prompt as token ids")
    messages: list[Message] | None = Field(
        None, min_length=1, description="chat messages, rendered with the model's chat template"
    )
    target_position: int | None = Field(None, description="index of the explained token (negative: from the end)")
    target_text: str | None = Field(None, description="a continuation appended to the prompt and explained")
    target_mode: TargetMode = Field(
        "sum", description="a target span as one attribution (sum) or one row per token (each)"
    )
    generate: int | None = Field(
        None, ge=1, le=100_000, description="greedy tokens to generate and explain (a service caps it)"
    )
    spans: list[tuple[int, int]] | None = Field(
        None, description="character spans [start, end) to aggregate scores over"
    )
    include_template: bool = Field(False, description="count chat-template tokens in aggregates")
    response_ids: list[int] | None = Field(
        None,
        min_length=1,
        description="a response produced elsewhere (vLLM, TGI, ...) as token ids: appended to the prompt exactly as "
        "given and explained like target_text; ids outside the vocabulary are refused, very unlikely tokens get an "
        "`unlikely_response` warning",
    )
    foil_text: str | None = Field(
        None,
        description="contrastive target: one token (its text) the single target token is compared with; the scores "
        "explain log p(target) − log p(foil)",
    )
    foil_id: int | None = Field(None, ge=0, description="contrastive target, as a token id (instead of foil_text)")

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The body fields, in declaration order (a subclass's own additions excluded)."""
        return tuple(AttributionRequest.model_fields)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every engine request argument with its default (the Python-only ones: None)."""
        return {
            **{name: info.default for name, info in AttributionRequest.model_fields.items()},
            **dict.fromkeys(PYTHON_ONLY),
        }

    def engine_arguments(self) -> dict[str, Any]:
        """``Attributor.attribute`` / ``estimate`` keyword arguments for this request (messages as dicts)."""
        arguments = {name: getattr(self, name) for name in self.fields()}
        if self.messages is not None:
            arguments["messages"] = [message.model_dump() for message in self.messages]
        return arguments


# the request arguments of Attributor.attribute / estimate
REQUEST_FIELDS = (*AttributionRequest.fields(), *PYTHON_ONLY)
