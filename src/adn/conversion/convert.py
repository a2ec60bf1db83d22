""":func:`convert`: a plain residual classifier made adaptive in place (see :mod:`adn.conversion`)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

from torch import nn

from ..core.network import AdaptiveDepthNet
from .classes import _clashes, adaptive_class
from .discover import discover, resolve_twins
from .families import Blocks
from .probe import Inspector, probe_size

__all__ = ["convert"]

_GENERIC_SHARED = ("downsample", "shortcut", "proj")


def convert(
    model: nn.Module,
    *,
    stages: Sequence[Sequence[nn.Module | str]] | None = None,
    num_stages: int | None = None,
    shared_norms: Sequence[str] | None = None,
    stage_twins: Mapping[int, Sequence[nn.Module | str]] | None = None,
    skipped_inactive: tuple[type[nn.Module], ...] | None = None,
    input_size: int | Sequence[int] | None = None,
) -> AdaptiveDepthNet:
    """Make ``model`` an adaptive-depth model in place and return it (the same object).

    ``stages``: the blocks of each stage (modules or dotted names), in execution order, instead of discovering
    them; the last ``floor(n/2)`` of a stage of ``n`` are skippable and must be residual. ``num_stages``: how many
    groups a flat encoder's layers form (ViT; default 4). ``shared_norms``: name components of the norms inside
    mandatory blocks that every sub-network shares (default: the family's, e.g. ``("downsample",)``).
    ``stage_twins`` / ``skipped_inactive``: as :meth:`AdaptiveDepthNet.set_stages` (default: the family's).
    ``input_size``: resolution of the shape probe (default: the model's own, else 224).

    An already adaptive model is returned unchanged (an error if options ask for another layout). A model
    without a residual stage of >= 2 blocks raises one ``ValueError`` line.
    """
    name = type(model).__name__
    options = (stages, num_stages, shared_norms, stage_twins, skipped_inactive)
    if isinstance(model, AdaptiveDepthNet):
        if any(o is not None for o in options):
            raise ValueError(
                f"cannot convert {name}: it is already an adaptive-depth model ({model.num_stages} stages); "
                "convert the plain model to choose other stages"
            )
        return model
    if not isinstance(model, nn.Module):
        raise ValueError(f"cannot convert {name}: not an nn.Module")
    clashes = _clashes(model)
    if clashes:
        raise ValueError(
            f"cannot convert {name}: its attribute(s) {', '.join(clashes)} clash with the adaptive-depth interface"
        )

    inspector = Inspector(model, probe_size(model, input_size))
    found, family, source = discover(model, inspector, stages, num_stages)
    _check_skippable(model, inspector, found, source)
    if shared_norms is None:
        shared_norms = family.shared_norms if family is not None else _GENERIC_SHARED
    if stage_twins is not None:
        twins = resolve_twins(model, stage_twins)
    else:
        twins = family.stage_twins(model, found) if family is not None and family.stage_twins else {}
    if skipped_inactive is None:
        skipped_inactive = family.skipped_inactive() if family is not None and family.skipped_inactive else ()
    _swap(model, found, tuple(shared_norms), twins, skipped_inactive)
    return model


def _check_skippable(model: nn.Module, inspector: Inspector, found: list[Blocks], source: str) -> None:
    """Every block that will be skippable must be residual (checked before anything is changed)."""
    names = {id(m): n for n, m in model.named_modules()}
    for i, blocks in enumerate(found):
        for block in blocks[len(blocks) - len(blocks) // 2 :]:
            why = inspector.why_not_skippable(block)
            if why is not None:
                raise ValueError(
                    f"cannot convert {type(model).__name__}: block {names.get(id(block), '?')!r} of stage {i} "
                    f"({source}) cannot be skipped: {why}"
                )


def _swap(model: nn.Module, found: list[Blocks], shared_norms: tuple[str, ...], twins, skipped_inactive) -> None:
    """Give ``model`` its adaptive class and declare its stages; on any failure, the model as it was."""
    # What set_stages may change, module by module: the class (the root's), the attributes (layout, paths ...),
    # the children (twins) and the hooks (the root's load_state_dict post hook). Each dict is copied, so that a
    # failure anywhere puts back exactly what was there.
    saved = [(m, m.__class__, {k: _copy(v) for k, v in m.__dict__.items()}) for m in model.modules()]
    model.__class__ = adaptive_class(type(model))
    try:
        model.set_stages(found, shared_norms=shared_norms, stage_twins=twins, skipped_inactive=skipped_inactive)
    except BaseException:
        for m, cls, state in saved:
            m.__class__ = cls
            m.__dict__.clear()
            m.__dict__.update(state)
        raise


def _copy(value: object) -> object:
    """A module attribute as saved for rollback: dicts (children, parameters, hooks) copied, the rest as is."""
    return copy.copy(value) if isinstance(value, dict) else value
