"""``heta attribute --input prompts.jsonl --output results.jsonl``: a file of prompts, resumable.

Each input line is one JSON object with the fields of an API request body
(:class:`~heta_core.AttributionRequest`'s, and ``config`` with the API's names, e.g. ``samples``)
and an optional ``id`` (default: the line number). Each output line is
``{"id", "line", "result"}`` or ``{"id", "line", "error": {"code", "detail"}}``, in input order.

Resuming: a rerun keeps the results already in the output, drops its error records and any line
cut short by a crash (the file is rewritten atomically first), and runs only what is missing.
A failed item never stops the run; the exit status is 1 when any item failed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ..config import HetaConfig, from_api_names
from ..errors import HetaError
from ..inputs.request import AttributionRequest
from .usage import UsageError

# a line is one API request body: the engine request's fields (the HTTP body's `model` and `wait` belong to a server)
BODY_FIELDS = AttributionRequest.fields()


def read_items(path: str) -> list[tuple[Any, int, dict | HetaError]]:
    """(id, line number, parsed object or the error that line gets) for every non-blank line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise UsageError(f"cannot read --input file: {error.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError("--input is not UTF-8 text") from None
    items, seen = [], {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            body = json.loads(line)
            if not isinstance(body, dict):
                raise HetaError(f"line {number} is not a JSON object", code="invalid_input")
        except json.JSONDecodeError as error:
            body = HetaError(
                f"line {number} is not valid JSON: {error.msg} at column {error.colno}", code="invalid_json"
            )
        except HetaError as error:
            body = error
        ident = body.pop("id", number) if isinstance(body, dict) else number
        key = json.dumps(ident)
        if key in seen:
            raise UsageError(f"--input: id {key} is on lines {seen[key]} and {number}; ids must be unique")
        seen[key] = number
        items.append((ident, number, body))
    if not items:
        raise UsageError("--input has no prompts (one JSON object per line)")
    return items


def call_of(body: dict, base: HetaConfig) -> dict[str, Any]:
    """``attribute`` keyword arguments (with ``config``) for one line; raises HetaError."""
    unknown = sorted(set(body) - set(BODY_FIELDS) - {"config"})
    if unknown:
        raise HetaError(
            f"unknown field(s) {', '.join(unknown)}; known: id, config, {', '.join(BODY_FIELDS)}", code="invalid_input"
        )
    call = {name: body[name] for name in BODY_FIELDS if name in body}
    overrides = dict(body.get("config") or {})
    if not isinstance(body.get("config") or {}, dict):
        raise HetaError("config must be a JSON object", code="invalid_config", field="config")
    if "granularity" in overrides:
        call["granularity"] = overrides.pop("granularity")
    overrides = from_api_names(overrides)
    call["config"] = (
        base.replace(**overrides) if overrides else base
    )  # a line's preset re-applies to the knobs it does not set
    return call


def finished(path: Path) -> dict[str, str]:
    """The results already in ``path`` (id key → line), rewriting the file to hold only them."""
    if not path.exists():
        return {}
    kept: dict[str, str] = {}
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a crash: run that item again
                continue
            if isinstance(record, dict) and "result" in record and "id" in record:
                kept[json.dumps(record["id"])] = line if line.endswith("\n") else line + "\n"
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text("".join(kept.values()), encoding="utf-8")
    os.replace(scratch, path)
    return kept


def run(attributor, items: list, output: Path, base: HetaConfig) -> int:
    """Attribute what ``output`` lacks of ``items`` (:func:`read_items`), appending to it."""
    from tqdm import tqdm

    done = finished(output)
    todo = [(ident, number, body) for ident, number, body in items if json.dumps(ident) not in done]
    calls = []
    for _ident, _number, body in todo:
        try:
            calls.append(call_of(body, base) if isinstance(body, dict) else body)
        except HetaError as error:
            calls.append(error)
    runnable = [call for call in calls if isinstance(call, dict)]
    outcomes = iter(attributor.iter_batch(runnable, errors="return")) if runnable else iter(())
    failed = 0
    with (
        output.open("a", encoding="utf-8") as sink,
        tqdm(
            total=len(items),
            initial=len(items) - len(todo),
            unit="prompt",
            desc="attributing",
            file=sys.stderr,
            dynamic_ncols=True,
        ) as bar,
    ):
        for (ident, number, _), call in zip(todo, calls, strict=True):
            outcome = next(outcomes) if isinstance(call, dict) else call
            record: dict[str, Any] = {"id": ident, "line": number}
            if isinstance(outcome, HetaError):
                failed += 1
                record["error"] = {"code": outcome.code, "detail": str(outcome)}
            else:
                record["result"] = outcome.to_dict()
            sink.write(json.dumps(record) + "\n")
            sink.flush()  # a crash loses at most the item in hand
            bar.update(1)
            bar.set_postfix(failed=failed, refresh=False)
    skipped = len(items) - len(todo)
    print(
        f"{len(todo) - failed} attributed, {failed} failed, {skipped} already in {output}"
        + (f" (errors are in {output}; a rerun retries them)" if failed else ""),
        file=sys.stderr,
    )
    return 1 if failed else 0
