"""The norms of a calibrated model's switchable form that take their per-config statistics at run time, from
the config's row of a ``[2^S, C]`` stack (``S`` stages): :class:`GatheredNorm` gathers the statistics themselves,
:class:`CorrectedNorm` keeps one config's statistics as constants and corrects its output per config. See
:mod:`adn.deploy.switchable` for what each costs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CorrectedNorm", "GatheredNorm"]


class _Flags:
    """The skip flags of the call in progress (a bool tensor, or a tuple of bools in eager mode) and its index."""

    skip: torch.Tensor | tuple[bool, ...] | None = None
    index: torch.Tensor | int = 0

    def row(self, table: torch.Tensor) -> torch.Tensor:
        """Row ``index`` of a ``[2^S, C]`` table: the running config's."""
        if isinstance(self.index, int):
            return table[self.index]
        # a 1-element index tensor: index_select keeps the shapes static (no data-dependent size)
        return table.index_select(0, self.index)[0]


class GatheredNorm(nn.Module):
    """A BatchNorm (eval semantics) whose running statistics are row ``index`` of a ``[2^S, C]`` stack: the ones
    calibrated for the config being run (the trained ones for configs that were not calibrated or never use it).
    The affine parameters are read from ``norm`` at call time (the model's own tensors)."""

    def __init__(self, flags: _Flags, norm: nn.Module, mean: torch.Tensor, var: torch.Tensor) -> None:
        super().__init__()
        self.__dict__.update(flags=flags, norm=norm)
        self.register_buffer("running_mean", mean)
        self.register_buffer("running_var", var)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, row = self.norm, self.flags.row
        return F.batch_norm(x, row(self.running_mean), row(self.running_var), n.weight, n.bias, False, 0.0, n.eps)


class CorrectedNorm(nn.Module):
    """A BatchNorm (eval semantics) with per-config statistics, as ``scale[index] * bn(x) + shift[index]``: ``bn``
    has one config's statistics as constants (onnxruntime folds it into the convolution before it, which stays
    prepacked in its blocked layout), and the ``[2^S, C]`` rows make it the config's own norm. A norm whose used
    statistics are one and the same is that constant norm alone. Computed from the norm's affine parameters when
    it is built: rebuild it after changing them."""

    def __init__(self, flags: _Flags, norm: nn.Module, mean: torch.Tensor, var: torch.Tensor, used: list[bool]):
        super().__init__()
        self.__dict__.update(flags=flags, norm=norm)
        ref = used.index(True) if any(used) else 0
        self.register_buffer("ref_mean", mean[ref].clone())
        self.register_buffer("ref_var", var[ref].clone())
        rows = [k for k, u in enumerate(used) if u]
        self.exact = all(torch.equal(mean[k], mean[ref]) and torch.equal(var[k], var[ref]) for k in rows)
        if not self.exact:  # bn_config(x) = scale * bn_ref(x) + shift, in float64 so that nothing is lost
            m, v, m0, v0 = (t.double() for t in (mean, var, mean[ref], var[ref]))
            w = torch.ones_like(m0) if norm.weight is None else norm.weight.detach().double()
            b = torch.zeros_like(m0) if norm.bias is None else norm.bias.detach().double()
            inv = (v + norm.eps).rsqrt()
            scale = (v0 + norm.eps).sqrt() * inv
            self.register_buffer("scale", scale.to(mean.dtype))
            self.register_buffer("shift", ((m0 - m) * w * inv + b * (1 - scale)).to(mean.dtype))
            self.register_buffer("unit_mean", torch.zeros_like(mean[0]))
            self.register_buffer("unit_var", torch.ones_like(var[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.norm
        y = F.batch_norm(x, self.ref_mean, self.ref_var, n.weight, n.bias, False, 0.0, n.eps)
        if self.exact:
            return y
        scale, shift = self.flags.row(self.scale), self.flags.row(self.shift)
        # one BatchNormalization with unit statistics: a single pass over y, where Mul and Add make two
        return F.batch_norm(y, self.unit_mean, self.unit_var, scale, shift, False, 0.0, 0.0)
