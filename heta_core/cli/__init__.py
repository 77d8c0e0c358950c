"""The ``heta`` command line: one module per command family.

``attribute`` (:mod:`.attribute`), ``eval`` and ``train-demo`` (:mod:`.evaluate`), ``bench``,
``bench-approx`` and ``bench-long`` (:mod:`.bench`), ``toy-model`` (:mod:`.toy_model`). Other
distributions' commands (the HTTP service's ``serve``, ``api``, ``worker``) are plugged in through
the ``heta.commands`` entry-point group, so the engine never imports them. Bad input exits with
status 2 and one line on stderr, never a traceback (set ``HETA_DEBUG=1`` to see one for
unexpected errors).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib import metadata

from ..errors import HetaError
from .usage import EXIT_INTERNAL, EXIT_USAGE, Parser, UsageError


def build_parser() -> Parser:
    from . import attribute, bench, evaluate, toy_model

    parser = Parser(prog="heta", description="Hessian-Enhanced Token Attribution for decoder-only LMs")
    parser.add_argument("--version", action="version", version=f"heta {metadata.version('heta')}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in (attribute, evaluate, bench, toy_model):
        module.register(commands)
    for entry in metadata.entry_points(group="heta.commands"):
        try:
            register = entry.load()
        except ImportError:  # the plugin's extras are not installed: its commands are absent
            continue
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        _quiet_libraries()
        return args.run(args)
    except (UsageError, HetaError) as error:
        print(f"heta: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # last resort: one line, not a traceback
        if os.environ.get("HETA_DEBUG"):
            raise
        print(f"heta: internal error: {type(error).__name__}: {error}".splitlines()[0], file=sys.stderr)
        return EXIT_INTERNAL


def _quiet_libraries() -> None:
    """Library warnings are noise on a CLI's stderr; errors still surface as exceptions."""
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # accelerate says on every load with offloaded weights that they are offloaded: what --device-map asked for
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
