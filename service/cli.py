"""``heta serve``, ``heta api``, ``heta worker``, ``heta download`` and ``heta probe-worker`` (registered
with the ``heta`` command through the ``heta.commands`` entry-point group). Flags override the matching
``HETA_*`` variables."""

from __future__ import annotations

import argparse
import sys


def _settings(args):
    from pydantic import ValidationError

    from .settings import Settings

    overrides = {
        k: v
        for k, v in (
            ("models", args.model),
            ("host", getattr(args, "host", None)),
            ("port", getattr(args, "port", None)),
            ("workers", getattr(args, "workers", None)),
            ("device", getattr(args, "device", None)),
        )
        if v
    }
    try:
        return Settings(**overrides)
    except ValidationError as error:  # one line naming the variable, not pydantic's report
        first = error.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        # a field read under a standard name of its own (OTEL_*) is reported by that name
        name = (field if field.isupper() else "HETA_" + field.upper()) if field else "settings"
        message = str(first["msg"]).removeprefix("Value error, ")
        where = "" if message.startswith("HETA_") else f"{name}: "  # a check across settings names its variables itself
        raise SystemExit(f"heta {args.command}: error: {where}{message}") from None


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", help="a model to serve (repeatable; default: HETA_MODELS)")


def _store_checked(args):
    """The settings, with a configured Redis reached once: a TLS or credential mistake ends the
    command with one line naming the setting (not a wait that never ends)."""
    from .connections import check_store

    settings = _settings(args)
    if settings.has_store:
        try:
            check_store(settings)
        except SystemExit as error:
            raise SystemExit(f"heta {args.command}: error: {error}") from None
    return settings


def _serve(args) -> int:
    from .supervisor import serve

    return serve(_store_checked(args))


def _api(args) -> int:
    from .app import create_app, run_server

    settings = _store_checked(args)
    if not settings.has_store:
        raise SystemExit(
            "heta api: error: set REDIS_URL or HETA_REDIS_SENTINELS (the API and its workers share one Redis)"
        )
    run_server(create_app(settings), settings.host, settings.port)
    return 0


def _worker(args) -> int:
    from .worker import main

    settings = _store_checked(args)
    return main(settings, settings.models)


def _download(args) -> int:
    from .download import DownloadError, fetch

    try:
        models = _settings(args).models  # the positional models, else HETA_MODELS
        if args.revision is not None and len(models) != 1:
            raise DownloadError("--revision needs exactly one model")
        for model in models:
            fetched = fetch(model, args.revision)
            print(fetched.note)
            if fetched.pinned:
                print(f"  pin it: HETA_MODELS={fetched.pinned}")
    except DownloadError as error:
        print(f"heta download: error: {error}", file=sys.stderr)
        return 2
    return 0


def _probe_worker(args) -> int:
    from .probe import probe_worker

    alive, message = probe_worker(_settings(args))
    print(message, file=sys.stdout if alive else sys.stderr)
    return 0 if alive else 1


def register(commands) -> None:
    serve = commands.add_parser("serve", help="run the API, the worker pool and (without REDIS_URL) an embedded Redis")
    _add_common(serve)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.add_argument("--device")
    serve.set_defaults(run=_serve)

    api = commands.add_parser("api", help="run only the HTTP API (needs REDIS_URL)")
    _add_common(api)
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    api.set_defaults(run=_api)

    worker = commands.add_parser("worker", help="run one worker process (needs REDIS_URL)")
    _add_common(worker)
    worker.add_argument("--device")
    worker.set_defaults(run=_worker)

    download = commands.add_parser(
        "download", help="fetch models into the Hugging Face cache (HF_HOME) so that workers start offline"
    )
    download.add_argument("model", nargs="*", help="HF id, optionally org/name@revision (default: HETA_MODELS)")
    download.add_argument("--revision", help="branch, tag or commit to fetch (default: main)")
    download.set_defaults(run=_download)

    probe = commands.add_parser(
        "probe-worker", help="liveness of this host's worker: exit 0 while its heartbeat is in the registry"
    )
    probe.set_defaults(run=_probe_worker, model=None)

    from .bench_load import add_arguments, run_from_args

    load = commands.add_parser(
        "bench-load", help="open-loop load over loopback: latency, throughput, 429s and queue overhead per arrival rate"
    )
    add_arguments(load)
    load.set_defaults(run=run_from_args)
