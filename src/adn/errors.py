"""Errors that the command line reports as one line (``adn: error: ...``) instead of a traceback."""

from __future__ import annotations


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


__all__ = ["UsageError", "torchvision_mismatch"]
