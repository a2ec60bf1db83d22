"""Errors that the command line reports as one line (``adn: error: ...``) instead of a traceback, and the checks the
configs (``adn.training.config``, ``adn.data.config``) validate their fields with."""

from __future__ import annotations

from collections.abc import Collection


class UsageError(Exception):
    """A user mistake (bad flag, contradictory options ...): one line on stderr, exit status 2."""


def torchvision_mismatch(exc: BaseException) -> str:
    """One line for a torchvision that fails to import with this torch (the usual cause: the two were installed
    separately, from different releases or builds), naming the pip command that installs a matching pair."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    try:
        vision = f"torchvision {version('torchvision')}"
    except PackageNotFoundError:
        vision = "torchvision"
    base = torch.__version__.split("+")[0]
    major, minor = (int(x) for x in base.split(".")[:2])
    pair = f'torch=={base} "torchvision==0.{minor + 15}.*"' if major == 2 else f"torch=={base} torchvision"
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"{vision} does not work with torch {torch.__version__} ({reason}); install a matching pair from one "
        f"index: pip install {pair} (for the CPU build add --index-url https://download.pytorch.org/whl/cpu)"
    )


def one_of(section: object, name: str, allowed: Collection[str]) -> None:
    """``section.name`` is None or one of ``allowed``: a wrong value is a ValueError line naming the choices."""
    value = getattr(section, name)
    if value is not None and value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of: {', '.join(allowed)}")


def at_least(section: object, low: float, *names: str, above: bool = False) -> None:
    """Each of ``names`` is None or ``>= low`` (``> low`` with ``above``): a wrong value is a ValueError line."""
    for name in names:
        value = getattr(section, name)
        if value is not None and (value <= low if above else value < low):
            raise ValueError(f"{name}={value!r} must be {'>' if above else '>='} {low}")


def at_most(section: object, high: float, *names: str) -> None:
    """Each of ``names`` is None or ``<= high``."""
    for name in names:
        value = getattr(section, name)
        if value is not None and value > high:
            raise ValueError(f"{name}={value!r} must be <= {high}")


__all__ = ["UsageError", "at_least", "at_most", "one_of", "torchvision_mismatch"]
