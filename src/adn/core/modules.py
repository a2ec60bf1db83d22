"""Functions over an adaptive model from outside it: finding it inside wrappers (:func:`unwrap`), the parameters a
sub-network uses, SyncBatchNorm conversion that keeps the sub-network paths current."""

from __future__ import annotations

from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel

from .network import TWIN, AdaptiveDepthNet, SkipLike


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside any nesting of DDP, ``torch.compile`` (``OptimizedModule``) and EMA (``AveragedModel``)
    wrappers: what holds the weights, the calibrated statistics and the sub-network paths. Anything else is
    returned as it is."""
    while True:
        if isinstance(model, DistributedDataParallel | AveragedModel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's wrapper
            model = model._orig_mod
        else:
            return model


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """``nn.SyncBatchNorm.convert_sync_batchnorm`` (twins are children, so they are converted too), with the
    sub-network paths rebuilt right away."""
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if isinstance(model, AdaptiveDepthNet):
        model.build_subnets()
    return model


def used_parameters(model: nn.Module, skip: SkipLike = None) -> list[nn.Parameter]:
    """The parameters sub-network ``skip`` computes with (skipped blocks and idle norm sets excluded)."""
    path = model.subnet(skip)
    return [p for n, p in path.named_parameters() if TWIN not in n.split(".") and not n.startswith("calibration.")]


__all__ = ["convert_sync_batchnorm", "unwrap", "used_parameters"]
