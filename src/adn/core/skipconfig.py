"""Skip configs: one bool per stage, ``True`` = skip that stage's skippable sub-path.

``FFFF`` is the super-net, ``TTTT`` the base-net; :func:`parse_skip` accepts every form users write
(``"TFTF"``, ``"True False True False"``, ``[True, False, ...]``, ``(1, 0, 1, 0)``, one bool for all stages).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from torch import nn

SkipLike = None | bool | str | Sequence[Any]

_TRUE = {"t", "true", "1", "y", "yes"}
_FALSE = {"f", "false", "0", "n", "no"}
_FORMS = "bools like [True, False, ...], a string like 'TFTF', or tokens like 'True False ...'"


def parse_skip(value: SkipLike, num_stages: int) -> tuple[bool, ...]:
    """Normalise a skip config to a tuple of ``num_stages`` bools.

    Accepted forms: a sequence of bools (or 0/1), a compact string ``"TFTF"``, the seed CLI's
    ``"True False True False"`` (or its list of tokens), and a single bool meaning every stage.
    ``None`` is refused: it means *a model's default* (``model.skip``), which only the model knows -- use
    ``model.resolve_skip(value)`` where ``None`` may come.
    """
    if value is None:
        raise ValueError(
            f"no skip config given (None): give {num_stages} values as {_FORMS}, or resolve None to the model's "
            "default with model.resolve_skip(None)"
        )
    if isinstance(value, bool):
        return (value,) * num_stages
    if isinstance(value, str):
        tokens = value.replace(",", " ").split()
        if len(tokens) == 1 and len(tokens[0]) > 1 and set(tokens[0].upper()) <= {"T", "F"}:
            tokens = list(tokens[0])  # compact form "TFTF"
        value = tokens
    try:
        items = list(value)
    except TypeError:
        raise ValueError(f"invalid skip config {value!r}: expected {num_stages} values as {_FORMS}") from None
    flags = []
    for item in items:
        if isinstance(item, bool):
            flags.append(item)
        elif isinstance(item, int) and item in (0, 1):
            flags.append(bool(item))
        elif isinstance(item, str) and item.strip().lower() in _TRUE | _FALSE:
            flags.append(item.strip().lower() in _TRUE)
        else:
            raise ValueError(f"invalid skip config {value!r}: bad token {item!r}; use {_FORMS}")
    if len(flags) != num_stages:
        raise ValueError(
            f"skip config {format_skip(flags) or repr(value)} has {len(flags)} values but this model has "
            f"{num_stages} stages; give {num_stages} values as {_FORMS}"
        )
    return tuple(flags)


def default_skip(value: SkipLike, num_stages: int) -> tuple[bool, ...]:
    """What a model's settable ``skip`` default holds for ``value``: parsed, and ``None`` is the super-net (a
    call's ``skip=None`` then means that default)."""
    return (False,) * num_stages if value is None else parse_skip(value, num_stages)


def format_skip(skip: Sequence[bool]) -> str:
    """``(True, False, True)`` -> ``"TFT"``."""
    return "".join("T" if s else "F" for s in skip)


def skip_configs(model_or_stages: nn.Module | int) -> list[tuple[bool, ...]]:
    """All ``2**S`` skip configs of a model (or a stage count), super-net first, base-net last."""
    n = model_or_stages if isinstance(model_or_stages, int) else model_or_stages.num_stages
    return list(itertools.product((False, True), repeat=n))


#: The earlier name of :func:`skip_configs`, kept for code that uses it. It returns configs, not modules: a
#: sub-network *module* is ``model.subnet(config)``.
subnets = skip_configs


__all__ = ["SkipLike", "default_skip", "format_skip", "parse_skip", "skip_configs", "subnets"]
