"""The one skip mechanism shared by every architecture.

A network is a stem, S residual *stages* and a head. Each stage of ``n >= 2`` blocks is split into a
**mandatory** sub-path (the first ``ceil(n/2)`` blocks, always including the downsampling block) and a
**skippable** sub-path (the last ``floor(n/2)`` blocks). A *skip config* holds one bool per stage;
``True`` skips that stage's skippable sub-path. All-False is the super-net, all-True the base-net.

Skipping changes the statistics of the features that later layers see, so each normalization layer of a
mandatory block is made *skip-aware*: it keeps a twin (``<norm>.skip_norm``) with its own affine
parameters and running statistics, used only while its stage is skipped.

Blocks stay where the architecture keeps them (so parameter names match torchvision's); a :class:`Stage`
only *refers* to them. That lets ViT group 12 flat encoder layers into 4 stages without renaming anything.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Sequence
from typing import Any, Union

import torch
from torch import nn

SkipLike = Union[None, bool, str, Sequence[Any]]

#: Norm layer types that are made skip-aware inside mandatory blocks.
NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)

_TRUE = {"t", "true", "1", "y", "yes"}
_FALSE = {"f", "false", "0", "n", "no"}


# --------------------------------------------------------------------------------------------- skip configs
def parse_skip(value: SkipLike, num_stages: int) -> tuple[bool, ...]:
    """Normalise a skip config to a tuple of ``num_stages`` bools.

    Accepted forms: a sequence of bools (or 0/1), a compact string ``"TFTF"``, the seed CLI's
    ``"True False True False"`` (or its list of tokens), and a single bool meaning every stage.
    ``None`` means the super-net.
    """
    forms = "bools like [True, False, ...], a string like 'TFTF', or tokens like 'True False ...'"
    if value is None:
        return (False,) * num_stages
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
        raise ValueError(f"invalid skip config {value!r}: expected {num_stages} values as {forms}") from None
    flags = []
    for item in items:
        if isinstance(item, bool):
            flags.append(item)
        elif isinstance(item, int) and item in (0, 1):
            flags.append(bool(item))
        elif isinstance(item, str) and item.strip().lower() in _TRUE | _FALSE:
            flags.append(item.strip().lower() in _TRUE)
        else:
            raise ValueError(f"invalid skip config {value!r}: bad token {item!r}; use {forms}")
    if len(flags) != num_stages:
        raise ValueError(
            f"skip config {format_skip(flags) or repr(value)} has {len(flags)} values but this model has "
            f"{num_stages} stages; give {num_stages} values as {forms}"
        )
    return tuple(flags)


def format_skip(skip: Sequence[bool]) -> str:
    """``(True, False, True)`` -> ``"TFT"``."""
    return "".join("T" if s else "F" for s in skip)


def subnets(model_or_stages: nn.Module | int) -> list[tuple[bool, ...]]:
    """All ``2**S`` skip configs of a model (or a stage count), super-net first, base-net last."""
    n = model_or_stages if isinstance(model_or_stages, int) else model_or_stages.num_stages
    return list(itertools.product((False, True), repeat=n))


# ------------------------------------------------------------------------------------- skip-aware norm
class SkipAwareNorm:
    """Mixin that turns a norm layer into a skip-aware one (see :func:`make_skip_aware`).

    The instance keeps its own class's parameters (so ``bn1.weight`` keeps torchvision's name) and gains a
    child ``skip_norm``: a plain copy used while ``stage_skipped`` is set by the owning :class:`Stage`.
    """

    stage_skipped: bool = False
    skip_norm: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stage_skipped:
            return self.skip_norm(x)
        return super().forward(x)  # type: ignore[misc]


_SKIP_AWARE_CLASSES: dict[type, type] = {}


def _skip_aware_class(cls: type) -> type:
    # One subclass per norm type (SkipAwareBatchNorm2d, SkipAwareLayerNorm, ...): isinstance checks such as
    # "is this a norm layer" (weight-decay groups, SyncBN conversion) keep working on the wrapped layer.
    if issubclass(cls, SkipAwareNorm):
        return cls
    if cls not in _SKIP_AWARE_CLASSES:
        _SKIP_AWARE_CLASSES[cls] = type(f"SkipAware{cls.__name__}", (SkipAwareNorm, cls), {})
    return _SKIP_AWARE_CLASSES[cls]


def make_skip_aware(norm: nn.Module) -> nn.Module:
    """Give ``norm`` a twin used when its stage is skipped (in place; returns ``norm``)."""
    if isinstance(norm, SkipAwareNorm):
        return norm
    twin = copy.deepcopy(norm)
    norm.__class__ = _skip_aware_class(type(norm))
    norm.skip_norm = twin
    norm.stage_skipped = False
    return norm


def restore_skip_aware(model: nn.Module) -> nn.Module:
    """Re-apply skip-awareness after a pass that rebuilt norm layers (e.g. SyncBatchNorm conversion)."""
    for m in model.modules():
        if "skip_norm" in m._modules and not isinstance(m, SkipAwareNorm):
            m.__class__ = _skip_aware_class(type(m))
            m.stage_skipped = False
    return model


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """``nn.SyncBatchNorm.convert_sync_batchnorm`` that keeps skip-aware norms skip-aware."""
    return restore_skip_aware(nn.SyncBatchNorm.convert_sync_batchnorm(model))


def _norms_of(block: nn.Module) -> Iterator[nn.Module]:
    # Norms on a block's shortcut ("downsample") are shared by all sub-networks, as in the published models.
    for name, m in block.named_modules():
        if isinstance(m, NORM_TYPES) and "downsample" not in name.split(".") and ".skip_norm" not in f".{name}":
            yield m


# ------------------------------------------------------------------------------------------------- stages
class Stage:
    """One residual stage: refers to its blocks, runs the skippable sub-path unless told to skip it.

    Deliberately not an ``nn.Module``: blocks are registered where the architecture keeps them, so parameter
    names stay those of the torchvision model.
    """

    def __init__(self, blocks: Sequence[nn.Module]):
        if len(blocks) < 2:
            raise ValueError("a stage needs at least 2 blocks (one-block stages have nothing to skip)")
        n_skip = len(blocks) // 2
        self.mandatory: list[nn.Module] = list(blocks[: len(blocks) - n_skip])
        self.skippable: list[nn.Module] = list(blocks[len(blocks) - n_skip :])
        for block in self.mandatory:
            for norm in list(_norms_of(block)):
                make_skip_aware(norm)

    def skip_aware_norms(self) -> Iterator[SkipAwareNorm]:
        # Looked up on every call rather than cached: SyncBN conversion and export replace norm modules.
        for block in self.mandatory:
            for m in block.modules():
                if isinstance(m, SkipAwareNorm):
                    yield m

    def __call__(self, x: torch.Tensor, skip: bool) -> torch.Tensor:
        for norm in self.skip_aware_norms():
            norm.stage_skipped = skip
        for block in self.mandatory:
            x = block(x)
        if not skip:  # skipped blocks are never executed, not multiplied by zero
            for block in self.skippable:
                x = block(x)
        return x

    def __len__(self) -> int:
        return len(self.mandatory) + len(self.skippable)


class AdaptiveDepthNet(nn.Module):
    """Base class of every adaptive-depth model.

    Subclasses build their layers, call :meth:`set_stages` with the blocks of each stage (in execution order),
    and run stage ``i`` in ``forward`` as ``self.stages[i](x, skip[i])`` where ``skip = self.resolve_skip(skip)``.
    """

    stages: list[Stage]

    def set_stages(self, stages: Sequence[Sequence[nn.Module]]) -> None:
        self.stages = [Stage(blocks) for blocks in stages]
        self._skip: tuple[bool, ...] = (False,) * len(self.stages)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def skip(self) -> tuple[bool, ...]:
        """Skip config used when ``forward`` gets ``skip=None`` (default: super-net). Settable in any form
        :func:`parse_skip` accepts, so plain ``model(x)`` works inside DDP, ``torch.compile`` and export."""
        return self._skip

    @skip.setter
    def skip(self, value: SkipLike) -> None:
        self._skip = parse_skip(value, self.num_stages)

    def resolve_skip(self, skip: SkipLike) -> tuple[bool, ...]:
        return self._skip if skip is None else parse_skip(skip, self.num_stages)

    def skippable_blocks(self) -> list[nn.Module]:
        return [b for s in self.stages for b in s.skippable]

    def extra_repr(self) -> str:
        sizes = ", ".join(f"{len(s.mandatory)}+{len(s.skippable)}" for s in self.stages)
        return f"stages(mandatory+skippable)=[{sizes}], skip={format_skip(self._skip)}"


def init_skip_norms_from_main(model: nn.Module) -> None:
    """Copy each skip-aware norm's parameters and statistics into its twin (after loading torchvision weights)."""
    for m in model.modules():
        if isinstance(m, SkipAwareNorm):
            m.skip_norm.load_state_dict(
                {k: v for k, v in m.state_dict().items() if not k.startswith("skip_norm.")}
            )
