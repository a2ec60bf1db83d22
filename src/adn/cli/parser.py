"""The argument parser every subcommand uses: one-line errors instead of usage dumps, one help style, and which
flags a command line gave explicitly."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..errors import UsageError


class HelpFormatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` once, only when there is a default worth showing and the help does not name it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, argparse.SUPPRESS) or action.nargs == 0:
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``adn: error: ...``, exit status 2) instead of usage dumps."""

    def __init__(self, prog: str, description: str) -> None:
        super().__init__(prog=prog, description=description, formatter_class=HelpFormatter)

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def explicit_dests(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The destinations of the flags that appear in ``argv`` (``--lr 0.1``, ``--lr=0.1``, ``-b 32``)."""
    found = set()
    for token in argv:
        option = token.split("=", 1)[0]
        action = parser._option_string_actions.get(option)
        if action is not None:
            found.add(action.dest)
    return found


__all__ = ["HelpFormatter", "Parser", "explicit_dests"]
