"""``heta serve``, ``heta api`` and ``heta worker`` (registered with the ``heta`` command through the
``heta.commands`` entry-point group). Flags override the matching ``HETA_*`` variables."""

from __future__ import annotations

import argparse


def _settings(args):
    from pydantic import ValidationError

    from .settings import Settings

    overrides = {k: v for k, v in (("models", args.model), ("host", getattr(args, "host", None)),
                                   ("port", getattr(args, "port", None)), ("workers", getattr(args, "workers", None)),
                                   ("device", getattr(args, "device", None))) if v}  # fmt: skip
    try:
        return Settings(**overrides)
    except ValidationError as error:  # one line naming the variable, not pydantic's report
        first = error.errors()[0]
        name = "HETA_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise SystemExit(f"heta {args.command}: error: {name}: {message}") from None


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", help="a model to serve (repeatable; default: HETA_MODELS)")


def _serve(args) -> int:
    from .supervisor import serve

    return serve(_settings(args))


def _api(args) -> int:
    from .api import create_app, run_server

    settings = _settings(args)
    if not settings.redis_url:
        raise SystemExit("heta api: error: set REDIS_URL (the API and its workers share one Redis)")
    run_server(create_app(settings), settings.host, settings.port)
    return 0


def _worker(args) -> int:
    from .worker import main

    settings = _settings(args)
    return main(settings, settings.models)


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
