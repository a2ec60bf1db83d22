"""How :class:`adn.SwitchableNet` is built: the *template*, a :func:`adn.core.tree.substitute` copy of the
model in which each stage's first block is a :class:`StageSwitch` (one ``torch.cond`` between the stage's two
branches) and the stage's other blocks are left out; and a calibrated model's per-config BatchNorm statistics,
either gathered at run time (:class:`GatheredNorm`) or held as constants of a branch per upstream config. See
:mod:`adn.deploy.switchable` for why it is made this way and what each choice costs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..core.network import BATCH_NORM_TYPES, TWIN, AdaptiveDepthNet
from ..core.skipconfig import skip_configs
from ..core.stats import FrozenStatsNorm
from ..core.tree import REMOVED, substitute
from .norms import CorrectedNorm, GatheredNorm, _Flags

__all__ = ["StageSwitch", "build_template"]


@torch.library.custom_op("adn::contiguous_operand", mutates_args=())
def contiguous_operand(x: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of ``x`` that inductor cannot see through: what a ``cond`` gets under ``torch.compile``.

    Why: torch 2.14's inductor may lay the tensor a ``cond`` reads out channels-last (its layout optimisation of
    convolutions) while the branches were compiled for the contiguous strides the trace recorded -- a stride
    assertion at the first call (reduced in docs/deploy.md). A plain ``clone`` is optimised away; an opaque op's
    output keeps the layout its fake implementation states. One copy of a stage's input per call."""
    return x.clone(memory_format=torch.contiguous_format)


@contiguous_operand.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


class StageSwitch(nn.Module):
    """Stage ``stage``: ``skipped`` blocks (mandatory, with twins) if its flag is set, else ``kept`` blocks."""

    def __init__(self, flags: _Flags, stage: int, skipped: Sequence[nn.Module], kept: Sequence[nn.Module]) -> None:
        super().__init__()
        self.__dict__["flags"] = flags  # shared by every switch of one SwitchableNet, not a submodule
        self.stage = stage
        self.skipped = nn.Sequential(*skipped)
        self.kept = nn.Sequential(*kept)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling() and not torch.compiler.is_exporting():  # not in an exported file
            x = contiguous_operand(x)
        return torch.cond(self.flags.skip[self.stage], self.skipped, self.kept, (x,))


# ------------------------------------------------------------------------------------------- the template
def _within(name: str, blocks: Sequence[str]) -> bool:
    return any(name == b or name.startswith(b + ".") for b in blocks)


def _gathered_norms(
    model: AdaptiveDepthNet, flags: _Flags, holder: nn.ModuleDict, corrected: bool = False, leave: Sequence[str] = ()
) -> dict[str, nn.Module]:
    """``{module name: GatheredNorm}`` (``corrected``: :class:`CorrectedNorm`) for every BatchNorm (main or twin)
    of a calibrated model outside the modules ``leave``, else ``{}``."""
    calibration = model._modules.get("calibration")
    if calibration is None or not calibration.configs():
        return {}
    twin_stage = dict(model.layout.twins)
    out: dict[str, nn.Module] = {}
    for name, norm in model.named_modules():
        parts = name.split(".")
        if not isinstance(norm, BATCH_NORM_TYPES) or parts[0] == "calibration" or norm.running_mean is None:
            continue
        if _within(name, leave):
            continue
        position, is_twin = (name.rpartition(".")[0], True) if parts[-1] == TWIN else (name, False)
        rows_mean, rows_var, used_by = [], [], []
        for config in skip_configs(model.num_stages):
            used = position in twin_stage and config[twin_stage[position]] == is_twin or position not in twin_stage
            stats = calibration.stats(config).get(position) if used else None
            rows_mean.append(stats.running_mean if stats is not None else norm.running_mean)
            rows_var.append(stats.running_var if stats is not None else norm.running_var)
            used_by.append(used)
        mean, var = torch.stack(rows_mean), torch.stack(rows_var)
        if corrected:
            gathered = CorrectedNorm(flags, norm, mean, var, used_by)
        else:
            gathered = GatheredNorm(flags, norm, mean, var)
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


def _plan(model: AdaptiveDepthNet) -> list[tuple[int, tuple[str, ...], tuple[str, ...]]]:
    """``(stage, skipped, kept)`` per ``cond`` of the template: the names of the modules each branch runs, the
    first of ``kept`` being where the ``cond`` goes (the rest of ``kept`` leave the template). One per stage, with
    the units next to it; one per other unit; one per other twinned norm outside the stages."""
    layout = model.layout
    in_stages = [b for mandatory, skippable in layout.stages for b in (*mandatory, *skippable)]
    outside = [(n, s) for n, s in layout.twins if not _within(n, in_stages)]
    unit_stages: dict[str, set[int]] = {}
    for name, stage in outside:
        unit = _unit_of(model, name, in_stages)
        if unit is not None:
            unit_stages.setdefault(unit, set()).add(stage)
    units = {u: next(iter(s)) for u, s in unit_stages.items() if len(s) == 1}  # unit -> the one flag it follows
    plan = []
    for i, (mandatory, skippable) in enumerate(layout.stages):
        mine = {u for u, s in units.items() if s == i}
        before, after = _absorb([*mandatory, *skippable], mine)
        plan.append((i, (*before, *mandatory, *after), (*before, *mandatory, *skippable, *after)))
        plan += [(i, (unit,), (unit,)) for unit in sorted(mine - {*before, *after})]
    plan += [(s, (n,), (n,)) for n, s in outside if not any(_within(n, [u]) for u in units)]
    return plan


def build_template(
    model: AdaptiveDepthNet, flags: _Flags, holder: nn.ModuleDict, stats: str = "gathered"
) -> tuple[nn.Module, str]:
    """The model with one ``cond`` per stage, and how a calibrated model's statistics are held in it (``"none"``
    if it is not calibrated). Twinned norms outside the stages switch with the module around them that holds no
    stage block (MobileNetV2's stem, first and last blocks): a ``cond`` between two copies of it, so that each
    branch has its convolution and norm together and onnxruntime fuses them; that module joins its stage's
    ``cond`` where it is next to the stage's blocks. Other twinned norms get a ``cond`` each."""
    plan = _plan(model)
    calibration = model._modules.get("calibration")
    if calibration is None or not calibration.configs():
        return _gathered_template(model, flags, holder, plan), "none"
    if stats == "constant":
        template = _constant_template(model, flags, plan)
        if template is not None:
            return template, "constant"
    elif stats in ("hybrid", "affine"):
        first = _constant_stages(model, plan) if stats == "hybrid" else 0
        try:
            return _gathered_template(model, flags, holder, plan, True, first), stats
        except _Constant:  # some statistics depend on downstream flags: no constant leaves
            holder.clear()
            return _gathered_template(model, flags, holder, plan, True), "affine"
    return _gathered_template(model, flags, holder, plan), "gathered"


def _constant_stages(model: AdaptiveDepthNet, plan) -> int:
    """How many stages, from the first, get constant leaves in ``"hybrid"``: as many as keep the extra folded
    copies of their weights (``2^(i+1) - 1`` for stage ``i``) within the model's own weight bytes."""
    total, extra = sum(p.numel() for p in model.parameters()), 0
    for i in range(model.num_stages):
        names = {n for s, _, kept in plan if s == i for n in kept}
        extra += (2 ** (i + 1) - 1) * sum(p.numel() for n in names for p in model.get_submodule(n).parameters())
        if extra > total:
            return i
    return model.num_stages


def _gathered_template(
    model: AdaptiveDepthNet, flags: _Flags, holder: nn.ModuleDict, plan, corrected: bool = False, constant: int = 0
) -> nn.Module:
    """One ``cond`` per stage with gathered (``corrected``: :class:`CorrectedNorm`) statistics, except that the
    first ``constant`` stages are ``cond`` trees with constant leaves (:func:`_prefix_switch`)."""
    layout = model.layout
    leave = [n for i, _, kept in plan if i < constant for n in kept]
    gathered = _gathered_norms(model, flags, holder, corrected, leave)
    switched = [n for _, _, kept in plan for n in kept]
    kept_tree = _variant(model, {}, gathered)
    replace: dict[str, object] = {
        name: module for name, module in gathered.items() if not _within(name, switched) and TWIN not in name.split(".")
    }
    skipped_trees: dict[int, nn.Module] = {}
    for i, skipped, kept in plan:
        if i < constant:
            replace[kept[0]] = _prefix_switch(model, flags, i, skipped, kept)
            replace.update(dict.fromkeys(kept[1:], REMOVED))
            continue
        if i not in skipped_trees:  # the model as stage i's skipped branch sees it: its twins and idle modules
            swaps = {n: _twin_of(model, n) for n, s in layout.twins if s == i}
            swaps.update({n: nn.Identity() for n, s in layout.inactive if s == i})
            skipped_trees[i] = _variant(model, swaps, gathered)
        first, *rest = kept
        skipped_modules = [skipped_trees[i].get_submodule(n) for n in skipped]
        replace[first] = StageSwitch(flags, i, skipped_modules, [kept_tree.get_submodule(n) for n in kept])
        replace.update(dict.fromkeys(rest, REMOVED))
    return _finish(model, replace)


def _finish(model: AdaptiveDepthNet, replace: dict[str, object]) -> nn.Module:
    template, _ = substitute(model, replace)
    template.__dict__.update(_fixed=(False,) * model.num_stages)
    return template


# ------------------------------------------------------------ calibrated statistics as constants, per branch
def _norm_stats(modules: Sequence[nn.Module]) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, running mean, running var) of every BatchNorm in ``modules`` (calibrated or not)."""
    out = []
    for k, module in enumerate(modules):
        for name, norm in module.named_modules():
            norm = norm.norm if isinstance(norm, FrozenStatsNorm) else norm
            if isinstance(norm, BATCH_NORM_TYPES) and norm.running_mean is not None:
                out.append((f"{k}.{name}", norm.running_mean, norm.running_var))
    return out


def _same_stats(variants: Sequence[Sequence[nn.Module]]) -> bool:
    first = _norm_stats(variants[0])
    for other in variants[1:]:
        stats = _norm_stats(other)
        if [n for n, *_ in stats] != [n for n, *_ in first] or not all(
            torch.equal(m, m0) and torch.equal(v, v0) for (_, m, v), (_, m0, v0) in zip(stats, first, strict=True)
        ):
            return False
    return True


class _Constant(Exception):
    """The calibrated statistics depend on more than the flags up to their stage: gather them instead."""


def _prefix_switch(model: AdaptiveDepthNet, flags: _Flags, stage: int, skipped: Sequence[str], kept: Sequence[str]):
    """The modules ``skipped`` / ``kept`` of stage ``stage``'s two branches, taken from the calibrated paths, under
    a ``cond`` tree over the flags of the stages before it: a BatchNorm's calibrated statistics depend only on the
    depth upstream of it, so each leaf holds them as constants (which onnxruntime folds into the convolutions)."""
    configs = skip_configs(model.num_stages)

    def branch(prefix: tuple[bool, ...]) -> list[nn.Module]:
        names = skipped if prefix[-1] else kept
        variants = [[model.subnet(c).get_submodule(n) for n in names] for c in configs if c[: len(prefix)] == prefix]
        if not _same_stats(variants):
            raise _Constant
        return variants[0]

    def tree(prefix: tuple[bool, ...]) -> nn.Module:
        if len(prefix) == stage:
            return StageSwitch(flags, stage, branch((*prefix, True)), branch((*prefix, False)))
        return StageSwitch(flags, len(prefix), [tree((*prefix, True))], [tree((*prefix, False))])

    return tree(())


def _constant_template(model: AdaptiveDepthNet, flags: _Flags, plan) -> nn.Module | None:
    """The template with every calibrated statistic a constant of its branch, or None where some depend on more
    than the flags up to their stage (a calibration of some configs only)."""
    replace: dict[str, object] = {}
    try:
        for i, skipped, kept in plan:
            first, *rest = kept
            replace[first] = _prefix_switch(model, flags, i, skipped, kept)
            replace.update(dict.fromkeys(rest, REMOVED))
        switched = [n for _, _, kept in plan for n in kept]
        for name, norm in model.named_modules():  # the rest (the stem's norm ...) must not depend on the config
            if (
                isinstance(norm, BATCH_NORM_TYPES)
                and not _within(name, [*switched, "calibration"])
                and TWIN not in name.split(".")
            ):
                variants = [[model.subnet(c).get_submodule(name)] for c in skip_configs(model.num_stages)]
                if not _same_stats(variants):
                    raise _Constant
                replace[name] = variants[0][0]
    except _Constant:
        return None
    return _finish(model, replace)
