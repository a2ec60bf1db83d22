"""Per-sub-network BatchNorm calibration: every one of the 2^S depths gets the statistics it actually sees.

Training updates a BatchNorm's running statistics from the super-net's and the base-net's passes only, so
the shared norms (stem, shortcuts, skippable blocks) average two different feature distributions and the
mixed sub-networks, never trained, use statistics of neither. :func:`calibrate` re-estimates, for each
requested sub-network, the running statistics of every BatchNorm that sub-network uses -- a cumulative
average over a few training batches in train mode, without gradients -- and stores them in the model
(``model.calibration``, part of its state dict). In eval mode ``model(x, skip=c)`` then uses the statistics
of ``c`` (a sub-network never calibrated keeps the trained ones); training mode is unaffected. The weights
and the trained statistics are not touched. (Beyond the paper and the reference code; slimmable networks
popularised the idea for width.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .modules import unwrap
from .network import BATCH_NORM_TYPES, TWIN, AdaptiveDepthNet
from .skipconfig import SkipLike, format_skip, parse_skip
from .skipconfig import subnets as all_subnets
from .stats import FrozenStatsNorm, NormStats, SubnetStatistics
from .tree import shallow_copy, substitute

__all__ = ["calibrate", "clear_calibration", "is_calibrated"]


def _fresh_norm(norm: nn.Module) -> nn.Module:
    """A copy of BatchNorm ``norm`` (same affine parameters) with zeroed statistics that accumulates a
    cumulative average (``momentum=None``) in train mode."""
    fresh = shallow_copy(norm)
    ref = norm.running_mean
    fresh.__dict__.update(
        _buffers={
            "running_mean": torch.zeros_like(ref),
            "running_var": torch.ones_like(ref),
            "num_batches_tracked": torch.zeros((), dtype=torch.long, device=ref.device),
        },
        _modules={},
        momentum=None,
        training=True,
    )
    return fresh


def _batch_norm_positions(path: nn.Module) -> list[str]:
    return [
        n
        for n, m in path.named_modules()
        # a path already calibrated holds FrozenStatsNorm wrappers: recalibrating replaces their statistics
        if isinstance(m, (*BATCH_NORM_TYPES, FrozenStatsNorm))
        and TWIN not in n.split(".")
        and not n.startswith("calibration.")
        and getattr(m, "running_mean", None) is not None
    ]


def _images(batch) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


@torch.no_grad()
def calibrate(
    model: AdaptiveDepthNet,
    data_loader: Iterable,
    subnets: str | Sequence[SkipLike] = "all",
    batches: int = 20,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> AdaptiveDepthNet:
    """Estimate and store the BatchNorm statistics of each sub-network in ``subnets`` (``"all"`` or a list of
    skip configs) from the first ``batches`` batches of ``data_loader`` (images, or ``(images, targets)``;
    use evaluation-style transforms on training images). Returns ``model``, in the mode it was in.

    The batches are read once and kept in memory. Models without BatchNorm (Swin, ViT) are returned unchanged.
    """
    net = unwrap(model)
    configs = all_subnets(net) if subnets == "all" else [parse_skip(c, net.num_stages) for c in subnets]
    device = torch.device(device) if device is not None else next(net.parameters()).device
    data = []
    for i, batch in enumerate(data_loader):
        if i >= batches:
            break
        data.append(_images(batch))
    if not data:
        raise ValueError("calibration needs at least one batch; the data loader is empty")
    was_training = net.training
    net.eval()  # dropout, drop-path off; only the fresh norm copies below run in train mode
    holder = net._modules.get("calibration")
    results: dict[tuple[bool, ...], dict[str, NormStats]] = {}
    try:
        configs_iter = configs
        if progress:
            from tqdm import tqdm

            configs_iter = tqdm(configs, desc="calibrating sub-networks", unit="net", leave=False)
        for skip in configs_iter:
            stats = _estimate(net.subnet(skip), data, device)  # eval mode: the calibrated path if there is one
            if stats:
                results[skip] = stats
    finally:
        net.train(was_training)
    if results:
        if holder is None:
            holder = SubnetStatistics()
        for skip, stats in results.items():
            holder._modules.pop(format_skip(skip), None)
            for position, s in stats.items():
                holder.put(skip, position, s)
        net.add_module("calibration", holder)
        net.build_subnets()
    return model


def _estimate(path: nn.Module, data: list[torch.Tensor], device: torch.device) -> dict[str, NormStats]:
    """The BatchNorm statistics of one sub-network's path over ``data``, by position (empty: no BatchNorm)."""
    fresh = {p: _fresh_norm(_trained_norm(path.get_submodule(p))) for p in _batch_norm_positions(path)}
    if not fresh:
        return {}
    probe, _ = substitute(path, fresh)
    for x in data:
        probe.forward_plain(x.to(device, non_blocking=True))
    out = {}
    for position, norm in fresh.items():
        stats = NormStats(norm.running_mean.shape[0], device=norm.running_mean.device, dtype=norm.running_mean.dtype)
        stats.running_mean.copy_(norm.running_mean)
        stats.running_var.copy_(norm.running_var)
        out[position] = stats
    return out


def _trained_norm(module: nn.Module) -> nn.Module:
    # In a calibrated path a norm is a FrozenStatsNorm around a copy of the trained one; its parameters are the
    # trained norm's either way, and only they (and eps, momentum-free accumulation) matter for calibrating.
    return getattr(module, "norm", module)


def clear_calibration(model: nn.Module) -> None:
    """Drop all calibrated statistics (e.g. before training on): every sub-network uses the trained ones."""
    net = unwrap(model)
    if net._modules.pop("calibration", None) is not None:
        net.build_subnets()


def is_calibrated(model: nn.Module, skip: SkipLike = None) -> bool:
    """Whether ``model`` holds calibrated statistics (for ``skip``, if given)."""
    net = unwrap(model)
    holder = net._modules.get("calibration")
    if holder is None:
        return False
    return bool(holder.configs()) if skip is None else holder.has(parse_skip(skip, net.num_stages))
