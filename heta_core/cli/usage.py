"""Command-line errors: one line on stderr and exit status 2, never argparse's usage block."""

from __future__ import annotations

import argparse

EXIT_USAGE = 2
EXIT_INTERNAL = 1


class UsageError(Exception):
    """A malformed command line (reported as one line, exit status 2)."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the whole usage block
        raise UsageError(message)
