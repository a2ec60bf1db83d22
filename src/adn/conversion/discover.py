"""Where :func:`adn.convert` finds a model's stages: the blocks it is given, a family rule, or the generic probe;
flat encoders grouped into stages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from .families import FAMILIES, Blocks, Family
from .probe import Inspector, generic_stages, group


def _resolve_blocks(model: nn.Module, stages: Sequence[Sequence[nn.Module | str]]) -> list[Blocks]:
    known = {id(m) for m in model.modules()}
    out = []
    for i, blocks in enumerate(stages):
        group = []
        for block in blocks:
            if isinstance(block, str):
                try:
                    block = model.get_submodule(block)
                except AttributeError:
                    raise ValueError(f"stages[{i}]: {type(model).__name__} has no submodule {block!r}") from None
            elif id(block) not in known:
                raise ValueError(f"stages[{i}]: a block is not a submodule of {type(model).__name__}")
            group.append(block)
        out.append(group)
    return out


def resolve_twins(model: nn.Module, stage_twins: Mapping[int, Sequence[nn.Module | str]]) -> dict[int, Blocks]:
    return {i: [model.get_submodule(m) if isinstance(m, str) else m for m in ms] for i, ms in stage_twins.items()}


_GENERIC_SOURCE = (
    "no family rule matched; looked for runs of >= 2 same-class shape-preserving residual blocks in its containers"
)


def discover(
    model: nn.Module,
    inspector: Inspector,
    stages: Sequence[Sequence[nn.Module | str]] | None,
    num_stages: int | None,
) -> tuple[list[Blocks], Family | None, str]:
    """The stages (groups of >= 2 blocks), the family rule that found them (None: given or generic) and, for
    messages, where they were looked for."""
    name = type(model).__name__
    family = None if stages is not None else next((f for f in FAMILIES if f.matches(model)), None)
    found: list[Blocks] = []
    flat = False
    if stages is not None:
        found, source = _resolve_blocks(model, stages), "the given stages"
    elif family is not None:
        source = f"looked for {family.name} stages in {family.looks_for}"
        try:
            found, flat = family.stages(model), family.flat
        except (AttributeError, IndexError, TypeError):  # a subclass laid out differently: use the fallback
            family = None
    if stages is None and family is None:
        (found, flat), source = generic_stages(inspector), _GENERIC_SOURCE
    if flat and found:
        found = group([b for s in found for b in s], num_stages, name)
    elif num_stages is not None:
        raise ValueError(
            f"cannot convert {name}: num_stages is for flat encoders (ViT-like: one run of identical layers), "
            f"and {name} has stages of its own ({source})"
        )
    found = [list(s) for s in found if len(s) >= 2]
    if not found:
        raise ValueError(
            f"cannot convert {name}: no residual stage of >= 2 blocks found ({source}); "
            "pass stages=[[block, ...], ...] to name them"
        )
    return found, family, source


__all__ = ["discover", "resolve_twins"]
