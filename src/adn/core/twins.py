"""Twin norms: each norm layer of a mandatory block (and the norms an architecture declares) gets a *twin*
(``<norm>.skip_norm``: own affine parameters and running statistics) that the sub-networks skipping its stage use
instead of it. Which norm types get twins, how a twin is made and recognised, and which norms of a block get one.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterator, Sequence

import torch
from torch import nn

#: Norm layer types that get twins inside mandatory blocks (subclasses included: SyncBatchNorm, LayerNorm2d ...).
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
#: Norms with running statistics: the ones :func:`adn.calibrate` re-estimates per sub-network.
BATCH_NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm,)
TWIN = "skip_norm"  # name of a norm's twin child module


class _SkipAwareMeta(type):
    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, nn.Module) and TWIN in obj._modules


class SkipAwareNorm(metaclass=_SkipAwareMeta):
    """``isinstance(m, SkipAwareNorm)``: ``m`` is a norm layer with a twin (``m.skip_norm``).

    Skip-aware norms keep their own class (``nn.BatchNorm2d``, ``nn.LayerNorm`` ...) and their forward; the twin
    is an ordinary child module that the norm itself never calls -- the sub-network's path calls it instead.
    """


def add_twin(norm: nn.Module) -> nn.Module:
    """Give ``norm`` a twin (a deep copy of it) as ``norm.skip_norm``; returns ``norm``."""
    if TWIN not in norm._modules:
        norm.add_module(TWIN, copy.deepcopy(norm))
    return norm


def init_skip_norms_from_main(model: nn.Module, loaded: Collection[str] | None = None) -> list[str]:
    """Copy each twinned norm's parameters and statistics into its twin (after loading torchvision weights).

    ``loaded``: the state-dict keys a file gave; then only the twin tensors it lacked are copied, and those it
    had are kept (a file with some twins keeps them). Returns the keys of the twin tensors that were copied.
    """
    copied = []
    with torch.no_grad():
        for name, m in model.named_modules():
            if not isinstance(m, SkipAwareNorm):
                continue
            main = {k: v for k, v in m.state_dict().items() if not k.startswith(TWIN + ".")}
            prefix = f"{name}.{TWIN}." if name else f"{TWIN}."
            for key, twin in m.skip_norm.state_dict(keep_vars=True).items():
                if loaded is None or prefix + key not in loaded:
                    twin.copy_(main[key])
                    copied.append(prefix + key)
    return copied


def twin_keys(model: nn.Module) -> list[str]:
    """The state-dict keys of every twin's parameters and statistics."""
    return [k for k in model.state_dict() if f".{TWIN}." in f".{k}"]


def _norms_in(block: nn.Module, shared: Sequence[str]) -> Iterator[str]:
    """Relative names of the norms of ``block`` that get twins: not inside another norm, not on a path that
    contains one of the ``shared`` name components (e.g. ``downsample``)."""
    inside: list[str] = []
    for name, m in block.named_modules():
        parts = name.split(".")
        if TWIN in parts or any(name.startswith(p + ".") for p in inside):
            continue
        if isinstance(m, NORM_TYPES) and name:
            inside.append(name)
            if not any(s in parts for s in shared):
                yield name


__all__ = [
    "BATCH_NORM_TYPES",
    "NORM_TYPES",
    "TWIN",
    "SkipAwareNorm",
    "add_twin",
    "init_skip_norms_from_main",
    "twin_keys",
]
