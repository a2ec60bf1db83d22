"""Errors that the command line reports as one line (``adn: error: ...``) instead of a traceback."""

from __future__ import annotations


class UsageError(Exception):
    """A user mistake (bad flag, contradictory options ...): one line on stderr, exit status 2."""


__all__ = ["UsageError"]
