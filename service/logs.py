"""Log lines of the API, the workers and ``heta serve``: text for a terminal, or one JSON object per
line (``HETA_LOG_FORMAT=json``) with the request and job each line is about.

The ids come from a context variable: the API's middleware binds the request id (and the job id once
a submission has one), a worker binds the job's ids while it runs that job; a line logged outside
any request or job has them null. A line's own ``extra={"duration": ...}`` (seconds) is kept.
Messages never carry a prompt or a key: loggers here name jobs by id only.
"""

from __future__ import annotations

import contextlib
import json
import logging
from contextvars import ContextVar
from datetime import datetime, timezone

from opentelemetry import trace

FIELDS = ("request_id", "job_id", "model", "trace_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_bound: ContextVar[dict[str, str]] = ContextVar("heta_log_context", default={})  # noqa: B039 - never mutated: set anew


@contextlib.contextmanager
def bound(**fields: str | None):
    """Every line logged inside carries these ids (None leaves an id as it is)."""
    token = _bound.set({**_bound.get(), **{k: v for k, v in fields.items() if v}})
    try:
        yield
    finally:
        _bound.reset(token)


def annotate(**fields: str | None) -> None:
    """Adds ids for the rest of the current request: its middleware's ``bound`` restores the ids
    it found when the request ends."""
    _bound.set({**_bound.get(), **{k: v for k, v in fields.items() if v}})


def current(name: str) -> str | None:
    return _bound.get().get(name)


def _trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


class ContextFilter(logging.Filter):
    """Puts the bound ids (and the active span's trace id) on every record, for either format."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = _bound.get()
        for name in FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, ids.get(name))
        if record.trace_id is None:
            record.trace_id = _trace_id()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **{name: getattr(record, name, None) for name in FIELDS},
            "duration": getattr(record, "duration", None),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def handler(log_format: str) -> logging.Handler:
    out = logging.StreamHandler()
    out.addFilter(ContextFilter())
    out.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    return out


def configure(log_format: str) -> None:
    """The process' root logger in the chosen format (replacing any earlier configuration); in json
    Python's and transformers' warnings become log lines too, so that every line of the output parses."""
    logging.basicConfig(level=logging.INFO, handlers=[handler(log_format)], force=True)
    logging.captureWarnings(log_format == "json")
    if log_format == "json":  # transformers writes through a text handler of its own
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_default_handler()
        transformers_logging.enable_propagation()
