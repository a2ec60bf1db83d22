"""Storage of per-sub-network BatchNorm statistics (what :func:`adn.calibrate` estimates) and the norm that
uses them in a calibrated sub-network's path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .skipconfig import format_skip
from .tree import shallow_copy


class NormStats(nn.Module):
    """Running statistics of one BatchNorm in one sub-network (what :func:`adn.calibrate` estimates)."""

    def __init__(self, num_features: int, device=None, dtype=None) -> None:
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(num_features, device=device, dtype=dtype))
        self.register_buffer("running_var", torch.ones(num_features, device=device, dtype=dtype))


class SubnetStatistics(nn.Module):
    """The calibrated BatchNorm statistics of a model, one set per calibrated sub-network.

    Kept as ``model.calibration``, so they are part of ``state_dict()``: ``calibration.<config>.<position of
    the norm in that sub-network>.running_mean`` / ``running_var`` (e.g. ``calibration.TTF.layer1.0.bn1.*``,
    which in ``TTF`` is the twin of ``layer1.0.bn1``).
    """

    def has(self, skip: Sequence[bool]) -> bool:
        return format_skip(skip) in self._modules

    def configs(self) -> list[tuple[bool, ...]]:
        return [tuple(c == "T" for c in key) for key in self._modules]

    def stats(self, skip: Sequence[bool]) -> dict[str, NormStats]:
        """``{position in the path: NormStats}`` of sub-network ``skip`` (empty if not calibrated)."""
        root = self._modules.get(format_skip(skip))
        return {} if root is None else {n: m for n, m in root.named_modules() if isinstance(m, NormStats)}

    @classmethod
    def fitting(cls, state_dict: Mapping[str, torch.Tensor], prefix: str, device) -> SubnetStatistics | None:
        """Empty holders shaped for the ``prefix``-ed calibration entries of ``state_dict`` (None if it has none),
        so that loading it fills them."""
        holder = None
        for key, value in state_dict.items():
            if key.startswith(prefix) and key.endswith(".running_mean"):
                config, _, rest = key[len(prefix) :].partition(".")
                holder = holder or cls()
                stats = NormStats(value.shape[0], device=device, dtype=value.dtype)
                holder.put(tuple(c == "T" for c in config), rest.rpartition(".")[0], stats)
        return holder

    def put(self, skip: Sequence[bool], position: str, stats: NormStats) -> None:
        node: nn.Module = self
        for part in [format_skip(skip), *position.split(".")[:-1]]:
            if part not in node._modules:
                node.add_module(part, nn.Module())
            node = node._modules[part]
        node.add_module(position.split(".")[-1], stats)

    def __repr__(self) -> str:  # the mirror trees would fill pages of print(model)
        return f"SubnetStatistics({len(self._modules)} calibrated sub-networks)"


class FrozenStatsNorm(nn.Module):
    """A BatchNorm of a calibrated sub-network's path: always eval semantics, with the running statistics of
    ``stats`` and the affine parameters of ``norm`` (the very same tensors: ``parameters()`` and the names in
    the path are ``norm``'s, and ``model.to(device)`` moves what it uses)."""

    def __init__(self, norm: nn.Module, stats: NormStats) -> None:
        super().__init__()
        inner = shallow_copy(norm)  # not registered: no .train() ever reaches it
        inner.__dict__.update(_buffers=stats._buffers, _modules={}, training=False)
        self.__dict__.update(_parameters=norm._parameters, _buffers=stats._buffers, norm=inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)

    def extra_repr(self) -> str:
        return f"{self.norm.extra_repr()}, calibrated statistics"


__all__ = ["FrozenStatsNorm", "NormStats", "SubnetStatistics"]
