"""The one skip mechanism shared by every architecture.

A network is a stem, S residual *stages* and a head. Each stage of ``n >= 2`` blocks is split into a
**mandatory** sub-path (the first ``ceil(n/2)`` blocks, always including the downsampling block) and a
**skippable** sub-path (the last ``floor(n/2)`` blocks). A *skip config* holds one bool per stage;
``True`` skips that stage's skippable sub-path. All-False is the super-net, all-True the base-net.

Skipping changes the statistics of the features that later layers see, so each norm layer of a mandatory
block has a *twin* (``<norm>.skip_norm``: own affine parameters and running statistics) used instead of it
while its stage is skipped. An architecture may give twins to norms outside the stages too, each driven by
one stage's flag (MobileNetV2's stem and last layers, Swin's patch merging), and declares which norms all
sub-networks share (ResNet's shortcut norms).

**Sub-networks are module paths, not flags.** ``model(x, skip=c)`` must be a pure function of the weights,
``x`` and ``c``: safe when threads or asyncio tasks run different sub-networks of one model at once,
re-entrant, picklable, and traceable by ``torch.compile`` without graph breaks. So nothing is written at call
time. Instead the model keeps, for every skip config ``c``, a *path*: a shallow copy of its module tree in
which the skippable blocks of skipped stages are left out, every twinned norm whose flag is set is replaced
by its twin (and, where declared, drop-path layers of skipped stages by ``Identity``), and -- in eval mode,
once :func:`adn.calibrate` has run -- every BatchNorm reads the statistics calibrated for ``c``. All
parameters, buffers and leaf modules are the *same objects* as the model's; only the containers on the way
to a replaced module are copied. ``model(x, skip=c)`` runs the architecture's own, unmodified ``forward``
on the path of ``c``. A per-call context variable would have been shorter, but ``torch.compile`` cannot
set one inside a graph, activation checkpointing would recompute without it, and a direct block call after a
model call must not see it; a path has none of these problems, costs a few Python objects per config, and
gives ``torch.compile`` one graph per sub-network. Paths are rebuilt (lazily, at the next eager call) when a
module is registered anywhere in the model (``model.fc = ...``, SyncBatchNorm conversion, calibration).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from .heads import Checkpointed, ClassifierMixin
from .layout import SkipLayout, Stage
from .sharing import SharingMixin
from .skipconfig import SkipLike, default_skip, format_skip, parse_skip, skip_configs
from .stats import FrozenStatsNorm, SubnetStatistics
from .tree import REMOVED, _Removed, substitute
from .twins import (  # noqa: F401  (re-exported: adn.core.network's names)
    BATCH_NORM_TYPES,
    NORM_TYPES,
    TWIN,
    SkipAwareNorm,
    _norms_in,
    add_twin,
    init_skip_norms_from_main,
)

# ----------------------------------------------------------------------------------- invalidation on change
_OWNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> weakref to the model it belongs to


def _on_module_registration(module: nn.Module, name: str, submodule: nn.Module | None) -> None:
    ref = _OWNERS.get(module)
    owner = ref() if ref is not None else None
    if owner is not None:
        owner.__dict__["_paths_valid"] = False


nn.modules.module.register_module_module_registration_hook(_on_module_registration)
_MISSING = object()
# ----------------------------------------------------------------------------------- tensor skip configs
_TENSOR_SKIP: dict[str, Callable] = {}  # what a bool-tensor skip config runs: build, run


def register_tensor_skip(build: Callable[[AdaptiveDepthNet], object], run: Callable[[AdaptiveDepthNet], Callable]):
    """Set what ``model(x, skip=<bool tensor>)`` runs (the switchable form): ``build(model)`` after the paths are
    built, ``run(model)``: the module to call. :mod:`adn.deploy.switchable` registers itself when imported (``import
    adn`` does), so that the core never imports the deploy layer above it."""
    _TENSOR_SKIP.update(build=build, run=run)


# ------------------------------------------------------------------------------------------------ the model
class AdaptiveDepthNet(ClassifierMixin, SharingMixin, nn.Module):
    """Base class of every adaptive-depth model.

    A subclass builds its layers as usual, then calls :meth:`set_stages` with the blocks of each stage (and
    its declarations), and defines :meth:`forward_plain` -- the plain network's forward (for a subclass of a
    torchvision model, the inherited one is used). ``model(x, skip=c)`` runs ``forward_plain`` on the path
    of ``c``; ``model.subnet(c)`` returns that path as a module that shares the model's weights.
    """

    layout: SkipLayout

    def set_stages(
        self,
        stages: Sequence[Sequence[nn.Module]],
        *,
        shared_norms: Sequence[str] = (),
        stage_twins: Mapping[int, Sequence[nn.Module]] | None = None,
        skipped_inactive: tuple[type[nn.Module], ...] = (),
    ) -> None:
        """Declare the stages and give twins to the norms that need them.

        ``stages``: each stage's blocks in execution order (blocks stay registered where the architecture
        keeps them, so parameter names do not change). ``shared_norms``: name components (relative to a block)
        of norms shared by all sub-networks, e.g. ``("downsample",)``. ``stage_twins``: modules outside the
        stages whose norms get twins driven by a stage's flag, ``{stage index (may be negative): [modules]}``.
        ``skipped_inactive``: module types in mandatory blocks that become ``Identity`` while their stage is
        skipped (e.g. drop-path).
        """
        names = {id(m): n for n, m in self.named_modules()}
        n_stages = len(stages)
        layout_stages, twins, inactive = [], [], []
        for i, blocks in enumerate(stages):
            if len(blocks) < 2:
                raise ValueError("a stage needs at least 2 blocks (one-block stages have nothing to skip)")
            n_skip = len(blocks) // 2
            mandatory = [names[id(b)] for b in blocks[: len(blocks) - n_skip]]
            layout_stages.append((tuple(mandatory), tuple(names[id(b)] for b in blocks[len(blocks) - n_skip :])))
            for block_name in mandatory:
                block = self.get_submodule(block_name)
                twins += [(f"{block_name}.{n}", i) for n in _norms_in(block, shared_norms)]
                inactive += [
                    (f"{block_name}.{n}", i)
                    for n, m in block.named_modules()
                    if skipped_inactive and isinstance(m, skipped_inactive)
                ]
        for index, modules in (stage_twins or {}).items():
            if not -n_stages <= index < n_stages:
                raise ValueError(f"stage_twins: no stage {index} in a model of {n_stages} stages")
            for module in modules:
                name = names[id(module)]
                twins += [(f"{name}.{n}" if n else name, index % n_stages) for n in _norms_in(module, ())]
                if isinstance(module, NORM_TYPES):
                    twins.append((name, index % n_stages))
        for norm_name, _ in twins:
            add_twin(self.get_submodule(norm_name))
        self.layout = SkipLayout(tuple(layout_stages), tuple(twins), tuple(inactive))
        self._skip: tuple[bool, ...] = (False,) * n_stages
        self._fixed: tuple[bool, ...] | None = None
        if _rebuild_after_load not in self._load_state_dict_post_hooks.values():
            self.register_load_state_dict_post_hook(_rebuild_after_load)
        self.build_subnets()

    # ---- configs
    @property
    def num_stages(self) -> int:
        return len(self.layout.stages)

    @property
    def adaptive_stages(self) -> list[Stage]:
        """The blocks of each stage (looked up by name, so they are current after module replacement)."""
        get = self.get_submodule
        return [Stage([get(n) for n in m], [get(n) for n in s]) for m, s in self.layout.stages]

    @property
    def skip(self) -> tuple[bool, ...]:
        """Skip config used when ``forward`` gets ``skip=None`` (default: super-net). Settable in any form
        :func:`parse_skip` accepts, so plain ``model(x)`` works inside DDP, ``torch.compile`` and export."""
        return self._skip

    @skip.setter
    def skip(self, value: SkipLike) -> None:
        self._skip = default_skip(value, self.num_stages)

    def resolve_skip(self, skip: SkipLike) -> tuple[bool, ...]:
        if skip is None:
            return self._skip
        if type(skip) is tuple and len(skip) == self.num_stages and all(type(s) is bool for s in skip):
            return skip  # the common case, without parsing
        return parse_skip(skip, self.num_stages)

    def skippable_blocks(self) -> list[nn.Module]:
        return [self.get_submodule(n) for _, skippable in self.layout.stages for n in skippable]

    # ---- paths
    def path_replacements(self, skip: tuple[bool, ...]) -> dict[str, nn.Module | _Removed]:
        """What the path of ``skip`` swaps, by module name (before calibration)."""
        replace: dict[str, nn.Module | _Removed] = {}
        for (_, skippable), skipped in zip(self.layout.stages, skip, strict=False):
            if skipped:
                replace.update(dict.fromkeys(skippable, REMOVED))
        for name, stage in self.layout.inactive:
            if skip[stage]:
                replace[name] = nn.Identity()
        for name, stage in self.layout.twins:
            if skip[stage]:
                replace[name] = getattr(self.get_submodule(name), TWIN)
        return replace

    def _build_path(self, skip: tuple[bool, ...], calibrated: bool) -> tuple[nn.Module, list]:
        replace = self.path_replacements(skip)
        if calibrated:  # each BatchNorm of the path, by its position there, gets the statistics of this config
            for position, stats in self.calibration.stats(skip).items():
                norm = replace[position] if position in replace else self.get_submodule(position)
                replace[position] = FrozenStatsNorm(norm, stats)
        path, pairs = substitute(self, replace)
        if self.__dict__.get("_checkpoint_blocks"):  # set_grad_checkpointing on a model without timm's mechanism
            kept = [
                n for (m, s), skipped in zip(self.layout.stages, skip, strict=True) for n in m + ((), s)[not skipped]
            ]
            path, more = substitute(path, {n: Checkpointed(path.get_submodule(n)) for n in kept})
            pairs += more
        path.__dict__.update(_fixed=skip, _skip=skip, _paths={}, _calibrated_paths={}, _paths_valid=True)
        return path, pairs

    def build_subnets(self) -> None:
        """(Re)build the path of every sub-network now. Done automatically: at construction, after a module
        is registered in the model (at the next eager call), on unpickling and by :func:`adn.calibrate`; call
        it yourself before ``torch.compile`` if you replaced modules since the last call."""
        if self._fixed is not None:
            return
        for module in self.modules():
            _OWNERS[module] = weakref.ref(self)
        paths, calibrated, pairs = {}, {}, []
        calibration = self._modules.get("calibration")
        for skip in skip_configs(self.num_stages):
            paths[skip], p = self._build_path(skip, False)
            pairs += p
            if calibration is not None and calibration.has(skip):
                calibrated[skip], p = self._build_path(skip, True)
                pairs += p
        originals = {id(o): o for _, o in pairs}.values()
        # The copied containers hold a snapshot of their originals' plain attributes (timm's
        # ``grad_checkpointing``, a block's ``stride`` ...; not torch's ``_modules``, hooks ... nor ``training``, which
        # is synchronised): remembered so that one set later rebuilds the paths.
        attrs = [
            (o, len(o.__dict__), [(k, v) for k, v in o.__dict__.items() if k[0] != "_" and k != "training"])
            for o in originals
        ]
        self.__dict__.update(
            _paths=paths, _calibrated_paths=calibrated, _path_pairs=pairs, _path_attrs=attrs, _paths_valid=True
        )
        self._sync_training()
        build = _TENSOR_SKIP.get("build")  # what a tensor skip runs: built here, never inside torch.compile
        if build is not None:
            self.__dict__["_switchable"] = build(self)

    def _attrs_current(self) -> bool:
        """No plain attribute of a copied container was set since the paths were built (a few dict reads)."""
        return all(
            len(o.__dict__) == n and all(o.__dict__.get(k, _MISSING) is v for k, v in kv)
            for o, n, kv in self.__dict__.get("_path_attrs", ())
        )

    def _sync_training(self) -> None:
        for copied, original in self.__dict__.get("_path_pairs", ()):
            copied.training = original.training

    def subnet(self, skip: SkipLike = None) -> nn.Module:
        """Sub-network ``skip`` as a module that shares this model's parameters and buffers: ``subnet(c)(x)``
        equals ``model(x, skip=c)`` (in eval mode with the statistics calibrated for ``c``, if any)."""
        skip = self.resolve_skip(skip)
        if self._fixed is not None:  # a path or an exported sub-network: skip=None means its own config
            if skip != self._fixed:
                raise ValueError(
                    f"this module is sub-network {format_skip(self._fixed)} only; export another "
                    "skip config to run a different one"
                )
            return self
        if not self.__dict__.get("_paths_valid", False) or not (torch.compiler.is_compiling() or self._attrs_current()):
            if torch.compiler.is_compiling():
                raise RuntimeError(
                    "adn: modules were replaced since the sub-networks were built; call "
                    "model.build_subnets() before torch.compile"
                )
            self.build_subnets()
        if not self.training:
            path = self._calibrated_paths.get(skip)
            if path is not None:
                return path
        return self._paths[skip]

    def forward(self, x: torch.Tensor, skip: SkipLike = None) -> torch.Tensor:
        """Run sub-network ``skip`` (default: :attr:`skip`, the super-net unless set). A bool tensor ``skip``
        (eval mode) runs the switchable form
        (:mod:`adn.deploy.switchable`): one ``torch.compile`` graph for every depth."""
        if isinstance(skip, torch.Tensor):
            run = _TENSOR_SKIP.get("run")
            if run is None:
                raise RuntimeError("a tensor skip config needs adn.deploy.switchable: `import adn` registers it")
            return run(self)(x, skip)
        return self.subnet(skip).forward_plain(x)

    def from_reference(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map a reference-implementation state dict (twins already renamed ``<norm>.skip_norm``) to this
        model's names; identity unless the architecture's layout differs from the reference's."""
        return dict(state_dict)

    def forward_plain(self, x: torch.Tensor) -> torch.Tensor:
        """The plain network's forward, run on a sub-network's path (default: the next class's ``forward``)."""
        return super().forward(x)  # type: ignore[misc]

    # ---- module plumbing
    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        # Calibrated statistics belong to the weights they were estimated for: a state dict brings its own set
        # (holders are made to fit it) or none (the model's is dropped).
        self._modules.pop("calibration", None)
        self.__dict__["_paths_valid"] = False
        device = next(iter(self.parameters()), torch.empty(0)).device
        holder = SubnetStatistics.fitting(state_dict, prefix + "calibration.", device)
        if holder is not None:
            self._modules["calibration"] = holder
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def train(self, mode: bool = True) -> AdaptiveDepthNet:
        super().train(mode)
        self._sync_training()  # path copies of containers carry their own ``training`` flag
        return self

    def __getstate__(self) -> dict:
        # Paths are derived data (and full of references into the tree): rebuilt after unpickling/deepcopy.
        state = self.__dict__.copy()
        for key in ("_paths", "_calibrated_paths", "_path_pairs", "_path_attrs", "_switchable"):
            state.pop(key, None)
        state["_paths_valid"] = False
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if self.__dict__.get("_fixed", True) is None and "layout" in self.__dict__:
            self.build_subnets()  # the tree is complete here; compile-ready right after a deepcopy or load

    def extra_repr(self) -> str:
        sizes = ", ".join(f"{len(m)}+{len(s)}" for m, s in self.layout.stages)
        if self._fixed is not None:
            return f"sub-network {format_skip(self._fixed)} of stages(mandatory+skippable)=[{sizes}]"
        return f"stages(mandatory+skippable)=[{sizes}], skip={format_skip(self._skip)}"


def _rebuild_after_load(module: AdaptiveDepthNet, incompatible_keys) -> None:
    if module._fixed is None:  # the calibration set may have changed: ready for torch.compile right away
        module.build_subnets()


__all__ = [
    "AdaptiveDepthNet",
    "BATCH_NORM_TYPES",
    "NORM_TYPES",
    "SkipAwareNorm",
    "SkipLayout",
    "SkipLike",
    "Stage",
    "TWIN",
    "add_twin",
    "format_skip",
    "init_skip_norms_from_main",
    "parse_skip",
    "skip_configs",
]
