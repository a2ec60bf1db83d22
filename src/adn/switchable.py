"""The switchable form of an adaptive-depth model: the skip config is a tensor input, one graph serves every depth.

:func:`switchable` wraps a model (registered or made by :func:`adn.convert`) in a :class:`SwitchableNet` whose
``forward(image, skip)`` takes ``skip`` as a bool tensor of shape ``[num_stages]``. Under ``torch.export`` and
``torch.compile`` only the chosen sub-network is computed, through one ``torch.cond`` per stage: the first block
of each stage (in a :func:`adn.tree.substitute` copy of the model, the *template*) becomes a :class:`StageSwitch`
that runs either the mandatory blocks with the stage's twins (skipped) or the mandatory blocks with the main norms
followed by the skippable ones (kept); the stage's other blocks are left out of the template. Twinned norms outside
the stages (MobileNetV2's stem and last layers, Swin's patch merging) get a small ``cond`` each
(:class:`NormSwitch`). The architecture's own, unmodified ``forward`` runs on the template, as it runs on a
sub-network's path in eager mode.

Why one ``cond`` per stage and not a tree of ``2^S`` flat paths: the tree makes the exported graph, the export
time and ``torch.compile``'s tracing ``2^S`` times larger (ResNet-50: 16 traced networks, 390 s to translate to
ONNX here, and an 886 MB file because every leaf gets its own folded weights), while a per-stage ``cond`` costs
about two traced networks whatever ``S``. What it costs instead: calibrated BatchNorm statistics depend on the
whole config, not on one stage's flag, so a calibrated model's BatchNorms gather their statistics at run time
from a ``[2^S, C]`` stack indexed by the config's number (:class:`GatheredNorm`); they are then inputs rather
than constants of the convolutions, and onnxruntime cannot fold them into them (see ``benchmarks/switchable.py``
for what that costs). An uncalibrated model's norms stay constants.

Where the flags come from: the architecture's ``forward`` passes only the features from block to block, so
:class:`SwitchableNet` hands the skip tensor to its switches through one small state object for the duration of a
call (written and cleared inside ``forward``; under ``torch.compile`` and ``torch.export`` this is traced into the
graph, whose input it is). Eager calls (outside any tracing) run the same template with Python bools under a lock
-- the thread-safe, state-free way to run a depth eagerly remains ``model(x, skip=c)``. Eval mode only: the
switchable form is for inference and export.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .skip import BATCH_NORM_TYPES, TWIN, AdaptiveDepthNet
from .skipconfig import subnets
from .tree import REMOVED, substitute

__all__ = [
    "GatheredNorm",
    "NormSwitch",
    "StageSwitch",
    "SwitchableNet",
    "check_skip",
    "build_switchable",
    "switchable",
    "switchable_of",
]


class _Flags:
    """The skip flags of the call in progress (a bool tensor, or a tuple of bools in eager mode) and its index."""

    skip: torch.Tensor | tuple[bool, ...] | None = None
    index: torch.Tensor | int = 0


class StageSwitch(nn.Module):
    """Stage ``stage``: ``skipped`` blocks (mandatory, with twins) if its flag is set, else ``kept`` blocks."""

    def __init__(self, flags: _Flags, stage: int, skipped: Sequence[nn.Module], kept: Sequence[nn.Module]) -> None:
        super().__init__()
        self.__dict__["flags"] = flags  # shared by every switch of one SwitchableNet, not a submodule
        self.stage = stage
        self.skipped = nn.Sequential(*skipped)
        self.kept = nn.Sequential(*kept)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cond(self.flags.skip[self.stage], self.skipped, self.kept, (x,))


class NormSwitch(nn.Module):
    """A twinned norm outside the stages: its twin while stage ``stage`` is skipped, else the main norm."""

    def __init__(self, flags: _Flags, stage: int, main: nn.Module, twin: nn.Module) -> None:
        super().__init__()
        self.__dict__["flags"] = flags
        self.stage, self.main, self.twin = stage, main, twin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cond(self.flags.skip[self.stage], self.twin, self.main, (x,))


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
        i, n = self.flags.index, self.norm
        if isinstance(i, int):
            mean, var = self.running_mean[i], self.running_var[i]
        else:  # a 1-element index tensor: index_select keeps the shapes static (no data-dependent size)
            mean, var = self.running_mean.index_select(0, i)[0], self.running_var.index_select(0, i)[0]
        return F.batch_norm(x, mean, var, n.weight, n.bias, False, 0.0, n.eps)


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
    graph. Rebuild it after changing the model's modules or calibration.
    """

    def __init__(self, model: AdaptiveDepthNet) -> None:
        super().__init__()
        self.model = model
        self.num_stages = model.num_stages
        self.__dict__["flags"] = _Flags()
        self.__dict__["_lock"] = threading.Lock()
        self.stats = nn.ModuleDict()  # GatheredNorms of a calibrated model (their stacked statistics)
        self.__dict__["template"] = _template(model, self.flags, self.stats)

    def forward(self, image: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            check_skip(skip, self.num_stages)
            if not torch.compiler.is_exporting():  # eager: the same template, with Python bools
                flags = tuple(bool(s) for s in skip.tolist())
                with self._lock:
                    return self._run(
                        image, flags, sum(2 ** (self.num_stages - 1 - i) for i, s in enumerate(flags) if s)
                    )
        place_values = 2 ** torch.arange(self.num_stages - 1, -1, -1, device=skip.device)
        return self._run(image, skip, (skip.long() * place_values).sum().reshape(1))

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


def switchable(model: AdaptiveDepthNet) -> SwitchableNet:
    """The switchable form of ``model`` (put in eval mode): ``switchable(model)(x, skip)`` equals
    ``model.eval()(x, skip=tuple(skip))`` for every config, calibrated statistics included."""
    net = getattr(model, "module", model)
    if not isinstance(net, AdaptiveDepthNet) or getattr(net, "_fixed", None) is not None:
        raise ValueError("switchable() needs an adaptive model (adn.create_model or adn.convert), not a sub-network")
    net.eval()
    if not net.__dict__.get("_paths_valid", False):
        net.build_subnets()
    return SwitchableNet(net).eval()


def switchable_of(model: AdaptiveDepthNet) -> SwitchableNet:
    """The switchable form of ``model`` that ``model(x, skip=<bool tensor>)`` runs (eval mode only): built with
    the sub-network paths (:meth:`~adn.skip.AdaptiveDepthNet.build_subnets`), so never inside ``torch.compile``."""
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
        return SwitchableNet(model)
    except (ValueError, KeyError, AttributeError, TypeError) as e:
        return e


# ------------------------------------------------------------------------------------------- the template
def _within(name: str, blocks: Sequence[str]) -> bool:
    return any(name == b or name.startswith(b + ".") for b in blocks)


def _gathered_norms(model: AdaptiveDepthNet, flags: _Flags, holder: nn.ModuleDict) -> dict[str, nn.Module]:
    """``{module name: GatheredNorm}`` for every BatchNorm (main or twin) of a calibrated model, else ``{}``."""
    calibration = model._modules.get("calibration")
    if calibration is None or not calibration.configs():
        return {}
    twin_stage = dict(model.layout.twins)
    out: dict[str, nn.Module] = {}
    for name, norm in model.named_modules():
        parts = name.split(".")
        if not isinstance(norm, BATCH_NORM_TYPES) or parts[0] == "calibration" or norm.running_mean is None:
            continue
        position, is_twin = (name.rpartition(".")[0], True) if parts[-1] == TWIN else (name, False)
        rows_mean, rows_var = [], []
        for config in subnets(model.num_stages):
            used = position in twin_stage and config[twin_stage[position]] == is_twin or position not in twin_stage
            stats = calibration.stats(config).get(position) if used else None
            rows_mean.append(stats.running_mean if stats is not None else norm.running_mean)
            rows_var.append(stats.running_var if stats is not None else norm.running_var)
        gathered = GatheredNorm(flags, norm, torch.stack(rows_mean), torch.stack(rows_var))
        holder[name.replace(".", "__")] = gathered
        out[name] = gathered
    return out


def _variant(model: AdaptiveDepthNet, swaps: dict[str, nn.Module], gathered: dict[str, nn.Module]) -> nn.Module:
    """A substitute copy of ``model`` with ``swaps`` (name -> module) and the gathered norms applied."""
    replace = {n: m for n, m in gathered.items() if n.rpartition(".")[2] != TWIN}  # twins come in by swaps
    for name, module in swaps.items():
        replace[name] = gathered.get(f"{name}.{TWIN}", module) if module is _twin_of(model, name) else module
    return substitute(model, replace)[0]


def _twin_of(model: nn.Module, name: str) -> nn.Module | None:
    return model.get_submodule(name)._modules.get(TWIN)


def _unit_of(model: nn.Module, name: str, in_stages: Sequence[str]) -> str | None:
    """The largest module around the twinned norm ``name`` that holds no stage block and is an element of an
    ``nn.Sequential`` (so it is called with the features alone), or None."""
    parts = name.split(".")
    for k in range(1, len(parts) + 1):
        unit = ".".join(parts[:k])
        if not any(_within(b, [unit]) for b in in_stages):
            parent = model.get_submodule(".".join(parts[: k - 1]))
            return unit if type(parent) is nn.Sequential else None
    return None


def _siblings(names: Sequence[str]) -> tuple[str, list[int]] | None:
    """``(parent, indices)`` if every name is an element of one ``nn.Sequential`` ``parent``, else None."""
    parents = {n.rpartition(".")[0] for n in names}
    if len(parents) != 1 or not all(n.rpartition(".")[2].isdigit() for n in names):
        return None
    return parents.pop(), sorted(int(n.rpartition(".")[2]) for n in names)


def _absorb(stage: Sequence[str], units: set[str]) -> tuple[list[str], list[str]]:
    """The ``units`` (of the stage's flag) right before and right after the stage's blocks in their
    ``nn.Sequential``: they join the stage's ``cond``, one ``If`` fewer each in the ONNX file."""
    found = _siblings(stage)
    if found is None:
        return [], []
    parent, indices = found
    before, after = [], []
    i = indices[0] - 1
    while f"{parent}.{i}" in units:
        before.insert(0, f"{parent}.{i}")
        i -= 1
    i = indices[-1] + 1
    while f"{parent}.{i}" in units:
        after.append(f"{parent}.{i}")
        i += 1
    return before, after


def _template(model: AdaptiveDepthNet, flags: _Flags, holder: nn.ModuleDict) -> nn.Module:
    """The model with one ``cond`` per stage. Twinned norms outside the stages switch with the module around them
    that holds no stage block (MobileNetV2's stem, first and last blocks): a ``cond`` between two copies of it, so
    that each branch has its convolution and norm together and onnxruntime fuses them; that module joins its
    stage's ``cond`` where it is next to the stage's blocks. Other twinned norms get a ``cond`` each."""
    layout = model.layout
    gathered = _gathered_norms(model, flags, holder)
    in_stages = [b for mandatory, skippable in layout.stages for b in (*mandatory, *skippable)]
    outside = [(n, s) for n, s in layout.twins if not _within(n, in_stages)]
    unit_stages: dict[str, set[int]] = {}
    for name, stage in outside:
        unit = _unit_of(model, name, in_stages)
        if unit is not None:
            unit_stages.setdefault(unit, set()).add(stage)
    units = {u: next(iter(s)) for u, s in unit_stages.items() if len(s) == 1}  # unit -> the one flag it follows
    kept_tree = _variant(model, {}, gathered)
    replace: dict[str, object] = {
        name: module
        for name, module in gathered.items()
        if not _within(name, in_stages) and TWIN not in name.split(".")
    }
    for i, (mandatory, skippable) in enumerate(layout.stages):
        mine = {u for u, s in units.items() if s == i}
        swaps = {n: _twin_of(model, n) for n, s in layout.twins if s == i and _within(n, [*mandatory, *mine])}
        swaps.update({n: nn.Identity() for n, s in layout.inactive if s == i})
        skipped_tree = _variant(model, swaps, gathered)
        before, after = _absorb([*mandatory, *skippable], mine)
        skipped = [skipped_tree.get_submodule(n) for n in (*before, *mandatory, *after)]
        kept = [kept_tree.get_submodule(n) for n in (*before, *mandatory, *skippable, *after)]
        first, *rest = (*before, *mandatory, *skippable, *after)
        replace[first] = StageSwitch(flags, i, skipped, kept)
        replace.update(dict.fromkeys(rest, REMOVED))
        for unit in mine - {*before, *after}:
            replace[unit] = StageSwitch(flags, i, [skipped_tree.get_submodule(unit)], [kept_tree.get_submodule(unit)])
    for name, stage in outside:
        if not any(_within(name, [u]) for u in units):
            main = gathered.get(name, model.get_submodule(name))
            twin = gathered.get(f"{name}.{TWIN}", _twin_of(model, name))
            replace[name] = NormSwitch(flags, stage, main, twin)
    template, _ = substitute(model, replace)
    template.__dict__.update(_fixed=(False,) * model.num_stages)
    return template
