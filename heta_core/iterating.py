"""Results yielded as they come: one call's partial results stage by stage (:meth:`Iterating.iter_stages`)
and a batch of prompts one result at a time (:meth:`Iterating.iter_batch`) — the ``Attributor``'s
iterator half (:class:`Iterating`, mixed into :class:`heta_core.Attributor`), built on its
``attribute`` and ``estimate``."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .config import HetaConfig
from .errors import ConfigError, HetaError, InputError
from .inputs import batch
from .inputs.request import REQUEST_FIELDS
from .results.schema import AttributionResult

if TYPE_CHECKING:
    from .results.schema import Estimate


class _Stopped(Exception):
    """iter_stages' consumer stopped early."""


_END = object()


class Iterating:
    """``iter_stages``, ``iter_batch``, ``attribute_batch``; needs the Attributor's ``attribute`` and ``estimate``."""

    if TYPE_CHECKING:  # the Attributor's, declared for the type checker

        def attribute(self, *args: Any, **kwargs: Any) -> AttributionResult: ...

        def estimate(self, *args: Any, **kwargs: Any) -> Estimate: ...

    def iter_stages(self, *args: Any, **kwargs: Any) -> Iterator[AttributionResult]:
        """:meth:`attribute`'s partial results as each stage finishes, then the final result.

        Same arguments as :meth:`attribute` (except ``on_partial``). The attribution runs on a helper
        thread while the caller consumes; closing the iterator early stops it at its next chunk."""
        if "on_partial" in kwargs:
            raise InputError("iter_stages yields the partial results: leave out on_partial")
        documents: queue.Queue = queue.Queue()
        stop = threading.Event()
        progress = kwargs.pop("progress", None)

        def guarded(fraction: float) -> None:
            if stop.is_set():
                raise _Stopped
            if progress is not None:
                progress(fraction)

        def work() -> None:
            try:
                documents.put(self.attribute(*args, progress=guarded, on_partial=documents.put, **kwargs))
            except BaseException as error:  # noqa: BLE001 - handed to the consumer
                documents.put(error)
            documents.put(_END)

        thread = threading.Thread(target=work, name="heta-iter-stages", daemon=True)
        thread.start()
        try:
            while (item := documents.get()) is not _END:
                if isinstance(item, BaseException):
                    if not isinstance(item, _Stopped):
                        raise item
                    continue
                yield item
        finally:
            stop.set()
            thread.join()

    def attribute_batch(
        self,
        inputs: Any,
        *,
        attention_mask: Any = None,
        config: HetaConfig | None = None,
        progress: Callable[[float], None] | None = None,
        errors: str = "raise",
        **shared: Any,
    ) -> list[AttributionResult | HetaError]:
        """One result per prompt, in order: ``list(iter_batch(...))``."""
        return list(
            self.iter_batch(
                inputs, attention_mask=attention_mask, config=config, progress=progress, errors=errors, **shared
            )
        )

    def iter_batch(
        self,
        inputs: Any,
        *,
        attention_mask: Any = None,
        config: HetaConfig | None = None,
        progress: Callable[[float], None] | None = None,
        errors: str = "raise",
        **shared: Any,
    ) -> Iterator[AttributionResult | HetaError]:
        """Attribute several prompts on the warm model, yielding each result as it is done.

        ``inputs``: texts, message lists, id rows, ``attribute`` keyword dicts (each may carry its
        own ``config``), or a tokenizer's ``[B, T]`` output (``attention_mask`` rows drop padding):
        see :mod:`heta_core.inputs.batch`. ``shared`` keyword arguments of ``attribute`` (e.g.
        ``target_text``, ``granularity``) apply to every item that does not set them. Prompts run
        one after another — each one's batched chunks already fill the device — and every prompt
        is checked (as ``estimate`` checks) before the first one runs. ``progress(fraction)``
        covers the whole batch. ``errors="return"`` yields a prompt's :class:`HetaError` in its place
        instead of raising.
        """
        if errors not in ("raise", "return"):
            raise ConfigError(f"errors must be 'raise' or 'return', got {errors!r}", field="errors")
        misplaced = sorted((set(shared) - set(REQUEST_FIELDS)) | (set(shared) & set(batch.INPUT_FIELDS)))
        if misplaced:
            raise InputError(
                f"attribute_batch: {', '.join(misplaced)} cannot apply to every prompt (the prompts are `inputs`)"
            )
        calls: list[dict[str, Any] | HetaError] = []
        for item in batch.items(inputs, attention_mask):
            arguments = {**shared, **item}
            arguments["config"] = arguments.get("config") or config
            try:  # everything attribute checks, before the first prompt runs
                self.estimate(**arguments)
                calls.append(arguments)
            except HetaError as error:
                if errors == "raise":
                    raise
                calls.append(error)

        def scaled(index: int) -> Callable[[float], None] | None:
            return None if progress is None else (lambda fraction: progress((index + fraction) / len(calls)))

        for index, call in enumerate(calls):
            if isinstance(call, HetaError):
                yield call
            else:
                try:
                    yield self.attribute(**call, progress=scaled(index))
                except HetaError as error:  # found only by running (e.g. a non-finite result)
                    if errors == "raise":
                        raise
                    yield error
            if progress is not None:
                progress((index + 1) / len(calls))
