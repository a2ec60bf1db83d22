"""The switchable form of an adaptive-depth model: the skip config is a tensor input, one graph serves every depth.

:func:`switchable` wraps a model (registered or made by :func:`adn.convert`) in a :class:`SwitchableNet` whose
``forward(image, skip)`` takes ``skip`` as a bool tensor of shape ``[num_stages]``. Under ``torch.export`` and
``torch.compile`` only the chosen sub-network is computed, through one ``torch.cond`` per stage: the first block of
each stage (in a :func:`adn.core.tree.substitute` copy of the model, the *template*) becomes a :class:`StageSwitch` that
runs either the mandatory blocks with the stage's twins (skipped) or the mandatory blocks with the main norms
followed by the skippable ones (kept); the stage's other blocks are left out of the template. Twinned norms outside
the stages switch with the module around them (MobileNetV2's stem, first and last blocks join the ``cond`` of the
stage next to them; Swin's patch merging gets its own); :mod:`adn.deploy.template` builds the template. The
architecture's own, unmodified ``forward`` runs on the template, as it runs on a sub-network's path in eager mode.

Why one ``cond`` per stage and not a tree of ``2^S`` flat paths: the tree makes the exported graph, the export
time and ``torch.compile``'s tracing ``2^S`` times larger (ResNet-50: 16 traced networks, 390 s to translate to
ONNX here, and an 886 MB file because every leaf gets its own folded weights), while a per-stage ``cond`` costs
about two traced networks whatever ``S``. What it costs instead: calibrated BatchNorm statistics depend on the
config, not on one stage's flag. Ways to hold them (``stats``; ResNet-50 in onnxruntime, against a single-depth
file's latency and session memory, in ``benchmarks/results/switchable-cpu-inductor.md``): *constant* -- a norm's
calibrated statistics depend only on the depth upstream of it, so stage ``i``'s ``cond`` goes under a tree of
``cond`` s on the ``i`` flags before it and each leaf holds its statistics as constants (as fast as a single-depth
file; the file still stores every weight once, but onnxruntime folds each leaf's norms into its own copy of the
weights, so its session holds up to ``2^S`` copies of the last stage: ~9x the memory) -- *gathered* -- each
BatchNorm gathers its statistics at run time from a ``[2^S, C]`` stack indexed by the config's number
(:class:`GatheredNorm`); they are inputs rather than constants of the convolutions, which onnxruntime can neither
fold nor pre-pack (1.3-1.7x the latency) -- *affine* -- each norm keeps one config's statistics as constants, which
fold into the convolution, and a per-config scale and shift corrects its output (:class:`CorrectedNorm`); the
correction is a run-time input, so onnxruntime reorders out of its blocked layout and back around it and cannot
fuse the ReLU (~1.2-1.3x) -- and *hybrid*, the default: constant leaves for the first stages, as many as fold
at most one model's worth of extra weight copies (big activations, small weights: where the correction costs the
most time and the copies the least memory), *affine* for the rest (ResNet-50: two of four stages; 1.08-1.12x the
latency, 1.7x the memory). An uncalibrated model's norms stay
constants of the one ``cond`` per stage.

Where the flags come from: the architecture's ``forward`` passes only the features from block to block, so
:class:`SwitchableNet` hands the skip tensor to its switches through one small state object for the duration of a
call (written and cleared inside ``forward``; under ``torch.compile`` and ``torch.export`` this is traced into the
graph, whose input it is). Eager calls (outside any tracing) run the same template with Python bools under a lock
-- the thread-safe, state-free way to run a depth eagerly remains ``model(x, skip=c)``. Eval mode only: the
switchable form is for inference and export.
"""

from __future__ import annotations

import threading

import torch
from torch import nn

from ..core.modules import unwrap
from ..core.network import AdaptiveDepthNet, register_tensor_skip
from .norms import CorrectedNorm, GatheredNorm, _Flags
from .template import StageSwitch, build_template

STATS_MODES = ("hybrid", "affine", "gathered", "constant")

__all__ = [
    "STATS_MODES",
    "CorrectedNorm",
    "GatheredNorm",
    "StageSwitch",
    "SwitchableNet",
    "check_skip",
    "build_switchable",
    "switchable",
    "switchable_of",
]


def check_skip(skip: object, num_stages: int) -> torch.Tensor:
    """``skip`` as given if it is a bool tensor of shape ``[num_stages]``, else one clear ``ValueError``."""
    if not isinstance(skip, torch.Tensor):
        raise ValueError(
            f"skip must be a torch.bool tensor of shape [{num_stages}] (True = skip that stage), got "
            f"{type(skip).__name__}; e.g. torch.tensor([True] * {num_stages})"
        )
    if skip.dtype != torch.bool or tuple(skip.shape) != (num_stages,):
        raise ValueError(
            f"skip must be a torch.bool tensor of shape [{num_stages}] (one flag per stage), got "
            f"{str(skip.dtype).removeprefix('torch.')} of shape {list(skip.shape)}"
        )
    return skip


class SwitchableNet(nn.Module):
    """``forward(image, skip)``: sub-network ``skip`` (bool tensor ``[num_stages]``) of ``model``, in eval mode.

    Build it with :func:`switchable`; ``model`` is a submodule (its parameters and buffers are this module's), so
    ``torch.export.export(net, (image, skip))`` and ``torch.compile(net, fullgraph=True)`` see every depth in one
    graph. Rebuild it after changing the model's modules or calibration. ``stats``: how a calibrated model's
    per-config BatchNorm statistics are held, see :func:`switchable`; :attr:`stats_mode` says which was used.
    """

    def __init__(self, model: AdaptiveDepthNet, stats: str = "hybrid") -> None:
        super().__init__()
        if stats not in STATS_MODES:
            raise ValueError(f"stats must be one of {', '.join(STATS_MODES)}, got {stats!r}")
        self.model = model
        self.num_stages = model.num_stages
        self.__dict__["flags"] = _Flags()
        self.__dict__["_lock"] = threading.Lock()
        self.stats = nn.ModuleDict()  # GatheredNorms of a calibrated model (their stacked statistics)
        self.__dict__["template"], self.stats_mode = build_template(model, self.flags, self.stats, stats)

    def forward(self, image: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            check_skip(skip, self.num_stages)
            self._follow_model()
            if not torch.compiler.is_exporting():  # eager: the same template, with Python bools
                flags = tuple(bool(s) for s in skip.tolist())
                with self._lock:
                    return self._run(
                        image, flags, sum(2 ** (self.num_stages - 1 - i) for i, s in enumerate(flags) if s)
                    )
        place_values = 2 ** torch.arange(self.num_stages - 1, -1, -1, device=skip.device)
        return self._run(image, skip, (skip.long() * place_values).sum().reshape(1))

    def _follow_model(self) -> None:
        """Give the gathered statistics the dtype and device of the norms they belong to: they are stacked copies
        of the calibration, and a model holds its switchable form outside its module tree (it is built from the
        model), so ``model.to()`` / ``.double()`` / ``.cuda()`` does not reach them."""
        for gathered in self.stats.values():
            want, have = gathered.norm.running_mean, next(gathered.buffers())
            if have.dtype != want.dtype or have.device != want.device:
                gathered.to(want)

    def _run(self, image: torch.Tensor, skip, index) -> torch.Tensor:
        self.flags.skip, self.flags.index = skip, index
        try:
            return self.template.forward_plain(image)
        finally:
            self.flags.skip, self.flags.index = None, 0

    def train(self, mode: bool = True) -> SwitchableNet:
        if mode:
            raise ValueError("the switchable form is for inference only; train the model itself (model.train())")
        return super().train(False)

    def extra_repr(self) -> str:
        return f"{self.num_stages} stages, {2**self.num_stages} sub-networks, skip: bool tensor [{self.num_stages}]"


def switchable(model: AdaptiveDepthNet, stats: str = "hybrid") -> SwitchableNet:
    """The switchable form of ``model`` (put in eval mode): ``switchable(model)(x, skip)`` equals
    ``model.eval()(x, skip=tuple(skip))`` for every config, calibrated statistics included.

    ``stats`` matters for a calibrated model only (see the module's docstring for what each costs).
    ``"constant"``: stage ``i``'s ``cond`` sits under a tree of ``cond`` s on the flags of the stages before it,
    and each leaf holds its statistics as constants (``2^(i+1)`` branches for stage ``i``). ``"gathered"``: one
    ``cond`` per stage, and every BatchNorm gathers its statistics from a ``[2^S, C]`` stack at run time.
    ``"affine"``: one ``cond`` per stage, every BatchNorm with one config's statistics, corrected per config at
    run time. ``"hybrid"``: ``"constant"`` for the first stages (as many as fold at most the model's weights
    again in extra copies), ``"affine"`` for the rest. ``"constant"`` falls back to ``"gathered"``, ``"hybrid"``
    to ``"affine"``, when some statistics depend on more than the flags up to their stage (a model calibrated
    for some configs only); :attr:`SwitchableNet.stats_mode` says which was used."""
    net = unwrap(model)
    if not isinstance(net, AdaptiveDepthNet) or getattr(net, "_fixed", None) is not None:
        raise ValueError("switchable() needs an adaptive model (adn.create_model or adn.convert), not a sub-network")
    net.eval()
    if not net.__dict__.get("_paths_valid", False):
        net.build_subnets()
    return SwitchableNet(net, stats).eval()


def switchable_of(model: AdaptiveDepthNet) -> SwitchableNet:
    """The switchable form of ``model`` that ``model(x, skip=<bool tensor>)`` runs (eval mode only): built with
    the sub-network paths (:meth:`~adn.AdaptiveDepthNet.build_subnets`), so never inside ``torch.compile``."""
    if model.training:
        raise ValueError("a skip config given as a tensor needs eval mode (model.eval()); in training pass a tuple")
    if not model.__dict__.get("_paths_valid", False):
        model.subnet()  # rebuilds the paths (or says to call build_subnets() before torch.compile)
    built = model.__dict__["_switchable"]
    if isinstance(built, Exception):
        raise ValueError(f"{type(model).__name__} has no switchable form ({built}); pass the skip config as a tuple")
    return built


def build_switchable(model: AdaptiveDepthNet) -> SwitchableNet | Exception:
    """:class:`SwitchableNet` of ``model``, or the error that prevented it (reported when a tensor skip is used:
    a model whose layout the template cannot be made of still works with tuple configs)."""
    try:
        return SwitchableNet(model, "gathered")  # built at every build_subnets(): the quickest to build
    except (ValueError, KeyError, AttributeError, TypeError) as e:
        return e


register_tensor_skip(build_switchable, switchable_of)  # model(x, skip=<bool tensor>) runs the switchable form
