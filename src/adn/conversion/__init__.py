"""``adn.convert``: turn an existing residual classifier (torchvision, timm, your own) into an adaptive-depth
model, in place.

:func:`convert` keeps the model's module tree, its parameter names and its own ``forward``; it finds the
residual *stages*, makes the last ``floor(n/2)`` blocks of each stage of ``n >= 2`` blocks skippable, gives the
norms of the mandatory blocks their twins (copies of the main norms) and swaps the instance's class for a cached
subclass ``(AdaptiveDepthNet, OriginalClass)``. The result *is* an :class:`~adn.skip.AdaptiveDepthNet` (and
still an ``OriginalClass``): ``model(x, skip=...)``, ``model.skip``, ``num_stages``, :func:`adn.count_flops`,
:func:`adn.calibrate`, :func:`adn.bench_subnets`, :func:`adn.export_subnet`, training -- all work as for the
registered models. Its state dict is the original's plus the twins' ``*.skip_norm.*`` entries, so
:func:`load_pretrained` reads the original's weights files.

How stages are found
--------------------
1. **Family rules** (:data:`FAMILIES`): a small table keyed by class (matched by module and name anywhere in
   the model's class hierarchy, so nothing optional is imported), each reading the stages from the model's own
   attributes and declaring what the registered models declare:

   ======================  =====================================================  =============================
   family                  stages                                                 declarations
   ======================  =====================================================  =============================
   tv ResNet/ResNeXt/WRN   ``layer1`` .. ``layer4``                               ``downsample`` norms shared
   tv RegNet               the blocks of each ``trunk_output`` stage              ``proj`` norms shared
   tv ConvNeXt             the ``CNBlock`` sequences in ``features``
   tv EfficientNet V1/V2   ``features[1:-1]`` (one sequence per stage)
   tv MobileNetV2/V3       flat ``features`` grouped by ``use_res_connect``       MobileNetV2: the registered
                                                                                  model's outside twins
   tv Swin V1/V2           ``features[1::2]``                                     patch-merging twins, no
                                                                                  drop-path when skipped
   tv ViT                  flat ``encoder.layers`` in ``num_stages`` groups
   timm ResNet             ``layer1`` .. ``layer4``                               ``downsample`` norms shared
   timm ConvNeXt           ``stages[i].blocks``
   timm EfficientNet/MNV3  ``blocks[i]`` (one sequence per stage)
   timm ViT                flat ``blocks`` in ``num_stages`` groups
   ======================  =====================================================  =============================

   A *flat* model (ViT) has one run of identical layers; it is grouped into ``num_stages`` consecutive groups
   (default 4, fewer if the model has fewer than 8 layers), the larger groups first.
   MobileNet-style flat sequences are split into stages at every block that is not residual: a stage is a
   non-residual block (stride or width change) followed by the residual ones.

2. **Generic fallback** (any other model): one forward probe on the ``meta`` device records every module's input
   and output shape. A *block candidate* is a module with weights (besides norms), not a bare container
   (``nn.Sequential``/``nn.ModuleList``/``nn.ModuleDict``) nor a norm, called once with one tensor and returning
   one tensor. Bottom-up through the tree, each container's runs of consecutive same-class candidates are split
   MobileNet-style (a new stage starts at every block that is not residual); groups of >= 2 blocks are stages,
   and a container holding a stage is not a candidate itself (the finest granularity wins). If that yields one
   stage of residual blocks only, it is a flat encoder and is grouped into ``num_stages``. Norms on paths named
   ``downsample``, ``shortcut`` or ``proj`` are declared shared.

**Residual** means: output shape = input shape, and with every weight of the block zeroed except its norms'
the output still depends on the input (an identity shortcut carries it; a plain block outputs a constant).
Every skippable block, from a rule, the fallback or ``stages=``, is checked that way (on one real batch-1
input of the probed shape) before anything is changed; a model that fails gets one ``ValueError`` line.

Pickling: the converted class is created at run time, so instances pickle (``torch.save(model)``,
``copy.deepcopy``) through :func:`_restore`, which rebuilds the class from the importable original one.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..skip import AdaptiveDepthNet, init_skip_norms_from_main
from .families import FAMILIES, Blocks, Family
from .probe import Inspector, generic_stages, group, probe_size

__all__ = ["FAMILIES", "Family", "adaptive_class", "convert", "create_converted", "load_pretrained"]

_GENERIC_SHARED = ("downsample", "shortcut", "proj")


# ------------------------------------------------------------------------------------------- the class swap
_CLASSES: dict[type, type] = {}


def _reduce_ex(self: nn.Module, protocol: int):
    return _restore, (type(self).__adn_original__,), self.__getstate__()


def _restore(original: type) -> nn.Module:
    """Unpickling: an empty instance of the converted class of ``original`` (its state is set next)."""
    return object.__new__(adaptive_class(original))


# timm-style methods: a model that has its own keeps them (timm's forward_features/reset_classifier)
_ORIGINAL_WINS = ("forward_features", "reset_classifier")
# AdaptiveDepthNet's names a model class must not define itself (forward, train, extra_repr, _load_from_state_dict,
# __getstate__ and __setstate__ are overridden cooperatively: they call the original's through super()).
_OVERRIDDEN = {"forward", "train", "extra_repr", "_load_from_state_dict", "__getstate__", "__setstate__"}
_RESERVED = (
    (
        {k for c in AdaptiveDepthNet.__mro__[:-2] for k in vars(c) if not k.startswith("__")}
        | {"layout", "calibration"}
        | {"_skip", "_fixed", "_paths", "_calibrated_paths", "_path_pairs", "_paths_valid"}
    )
    - _OVERRIDDEN
    - set(_ORIGINAL_WINS)
)


def adaptive_class(original: type) -> type:
    """The cached class ``(AdaptiveDepthNet, original)`` that converted ``original`` instances get."""
    cls = _CLASSES.get(original)
    if cls is None:
        namespace = {
            "__module__": __name__,
            "__qualname__": f"Adaptive{original.__qualname__}",
            "__doc__": f"{original.__name__} converted to an adaptive-depth model by adn.convert.",
            "__adn_original__": original,
            "__reduce_ex__": _reduce_ex,
        }
        namespace.update({name: getattr(original, name) for name in _ORIGINAL_WINS if hasattr(original, name)})
        cls = type(f"Adaptive{original.__name__}", (AdaptiveDepthNet, original), namespace)
        _CLASSES[original] = cls
    return cls


def _clashes(model: nn.Module) -> list[str]:
    in_class = {k for c in type(model).__mro__ if c is not nn.Module and c is not object for k in vars(c)}
    in_instance = set(model.__dict__) | set(model._modules) | set(model._parameters) | set(model._buffers)
    return sorted(_RESERVED & in_class | _RESERVED & in_instance)


# ------------------------------------------------------------------------------------------- convert
def _resolve_blocks(model: nn.Module, stages: Sequence[Sequence[nn.Module | str]]) -> list[Blocks]:
    known = {id(m) for m in model.modules()}
    out = []
    for i, blocks in enumerate(stages):
        group = []
        for block in blocks:
            if isinstance(block, str):
                try:
                    block = model.get_submodule(block)
                except AttributeError:
                    raise ValueError(f"stages[{i}]: {type(model).__name__} has no submodule {block!r}") from None
            elif id(block) not in known:
                raise ValueError(f"stages[{i}]: a block is not a submodule of {type(model).__name__}")
            group.append(block)
        out.append(group)
    return out


def _resolve_twins(model: nn.Module, stage_twins: Mapping[int, Sequence[nn.Module | str]]) -> dict[int, Blocks]:
    return {i: [model.get_submodule(m) if isinstance(m, str) else m for m in ms] for i, ms in stage_twins.items()}


_GENERIC_SOURCE = (
    "no family rule matched; looked for runs of >= 2 same-class shape-preserving residual blocks in its containers"
)


def _discover(
    model: nn.Module,
    inspector: Inspector,
    stages: Sequence[Sequence[nn.Module | str]] | None,
    num_stages: int | None,
) -> tuple[list[Blocks], Family | None, str]:
    """The stages (groups of >= 2 blocks), the family rule that found them (None: given or generic) and, for
    messages, where they were looked for."""
    name = type(model).__name__
    family = None if stages is not None else next((f for f in FAMILIES if f.matches(model)), None)
    found: list[Blocks] = []
    flat = False
    if stages is not None:
        found, source = _resolve_blocks(model, stages), "the given stages"
    elif family is not None:
        source = f"looked for {family.name} stages in {family.looks_for}"
        try:
            found, flat = family.stages(model), family.flat
        except (AttributeError, IndexError, TypeError):  # a subclass laid out differently: use the fallback
            family = None
    if stages is None and family is None:
        (found, flat), source = generic_stages(inspector), _GENERIC_SOURCE
    if flat and found:
        found = group([b for s in found for b in s], num_stages, name)
    elif num_stages is not None:
        raise ValueError(
            f"cannot convert {name}: num_stages is for flat encoders (ViT-like: one run of identical layers), "
            f"and {name} has stages of its own ({source})"
        )
    found = [list(s) for s in found if len(s) >= 2]
    if not found:
        raise ValueError(
            f"cannot convert {name}: no residual stage of >= 2 blocks found ({source}); "
            "pass stages=[[block, ...], ...] to name them"
        )
    return found, family, source


def convert(
    model: nn.Module,
    *,
    stages: Sequence[Sequence[nn.Module | str]] | None = None,
    num_stages: int | None = None,
    shared_norms: Sequence[str] | None = None,
    stage_twins: Mapping[int, Sequence[nn.Module | str]] | None = None,
    skipped_inactive: tuple[type[nn.Module], ...] | None = None,
    input_size: int | Sequence[int] | None = None,
) -> AdaptiveDepthNet:
    """Make ``model`` an adaptive-depth model in place and return it (the same object).

    ``stages``: the blocks of each stage (modules or dotted names), in execution order, instead of discovering
    them; the last ``floor(n/2)`` of a stage of ``n`` are skippable and must be residual. ``num_stages``: how many
    groups a flat encoder's layers form (ViT; default 4). ``shared_norms``: name components of the norms inside
    mandatory blocks that every sub-network shares (default: the family's, e.g. ``("downsample",)``).
    ``stage_twins`` / ``skipped_inactive``: as :meth:`AdaptiveDepthNet.set_stages` (default: the family's).
    ``input_size``: resolution of the shape probe (default: the model's own, else 224).

    An already adaptive model is returned unchanged (an error if options ask for another layout). A model
    without a residual stage of >= 2 blocks raises one ``ValueError`` line.
    """
    name = type(model).__name__
    options = (stages, num_stages, shared_norms, stage_twins, skipped_inactive)
    if isinstance(model, AdaptiveDepthNet):
        if any(o is not None for o in options):
            raise ValueError(
                f"cannot convert {name}: it is already an adaptive-depth model ({model.num_stages} stages); "
                "convert the plain model to choose other stages"
            )
        return model
    if not isinstance(model, nn.Module):
        raise ValueError(f"cannot convert {name}: not an nn.Module")
    clashes = _clashes(model)
    if clashes:
        raise ValueError(
            f"cannot convert {name}: its attribute(s) {', '.join(clashes)} clash with the adaptive-depth interface"
        )

    inspector = Inspector(model, probe_size(model, input_size))
    found, family, source = _discover(model, inspector, stages, num_stages)
    names = {id(m): n for n, m in model.named_modules()}
    for i, blocks in enumerate(found):
        for block in blocks[len(blocks) - len(blocks) // 2 :]:
            why = inspector.why_not_skippable(block)
            if why is not None:
                raise ValueError(
                    f"cannot convert {name}: block {names.get(id(block), '?')!r} of stage {i} ({source}) cannot be "
                    f"skipped: {why}"
                )

    if shared_norms is None:
        shared_norms = family.shared_norms if family is not None else _GENERIC_SHARED
    if stage_twins is not None:
        twins = _resolve_twins(model, stage_twins)
    else:
        twins = family.stage_twins(model, found) if family is not None and family.stage_twins else {}
    if skipped_inactive is None:
        skipped_inactive = family.skipped_inactive() if family is not None and family.skipped_inactive else ()

    original = type(model)
    model.__class__ = adaptive_class(original)
    try:
        model.set_stages(found, shared_norms=tuple(shared_norms), stage_twins=twins, skipped_inactive=skipped_inactive)
    except BaseException:
        model.__class__ = original
        for m in model.modules():
            m._modules.pop("skip_norm", None)
        for key in ("layout", "_skip", "_fixed", "_paths", "_calibrated_paths", "_path_pairs", "_paths_valid"):
            model.__dict__.pop(key, None)
        raise
    return model


# ------------------------------------------------------------------------------------------- builders, weights
_PREFIXES = {"tv": "torchvision", "torchvision": "torchvision", "timm": "timm"}


def _unknown(kind: str, name: str, known: Sequence[str]) -> ValueError:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ValueError(f"unknown {kind} model {name!r}{hint}")


def create_converted(
    spec: str,
    num_classes: int = 1000,
    *,
    num_stages: int | None = None,
    shared_norms: Sequence[str] | None = None,
    **kwargs: Any,
) -> AdaptiveDepthNet:
    """Build a randomly initialised torchvision or timm classifier and :func:`convert` it.

    ``spec``: ``"tv:<name>"`` / ``"torchvision:<name>"`` (``torchvision.models.get_model(name, weights=None,
    num_classes=..., **kwargs)``) or ``"timm:<name>"`` (``timm.create_model(name, pretrained=False,
    num_classes=..., **kwargs)``). ``num_stages`` and ``shared_norms`` go to :func:`convert`; other keyword
    arguments to the builder (``image_size``, ``drop_path_rate`` ...). Load the original's weights with
    :func:`load_pretrained`. Errors are one line (unknown prefix or name, timm not installed).
    """
    prefix, sep, name = spec.partition(":")
    if not sep or prefix not in _PREFIXES or not name:
        raise ValueError(
            f"invalid model spec {spec!r}: use 'tv:<name>' or 'torchvision:<name>' for torchvision models, "
            "'timm:<name>' for timm models (e.g. 'tv:resnet18', 'timm:convnext_atto')"
        )
    if _PREFIXES[prefix] == "torchvision":
        import torchvision.models as tvm

        known = tvm.list_models(module=tvm)  # the classifiers (not detection, segmentation, video ...)
        if name not in known:
            raise _unknown("torchvision classification", name, known)
        model = tvm.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    else:
        try:
            import timm
        except ImportError:
            raise ValueError(f"cannot build {spec!r}: timm is not installed (pip install timm)") from None
        if not timm.is_model(name):
            raise _unknown("timm", name, timm.list_models())
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    return convert(model, num_stages=num_stages, shared_norms=shared_norms)


def load_pretrained(
    model: AdaptiveDepthNet, source: str | Any | Mapping[str, torch.Tensor], *, weights_only: bool = True
) -> AdaptiveDepthNet:
    """Load the weights of the *unconverted* model into converted ``model`` (its super-net): a plain state dict
    with torchvision's/timm's names, a checkpoint holding one under ``"model"`` or ``"state_dict"``, as a
    file (``torch.save`` or ``*.safetensors``) or a mapping. Each twin norm becomes a copy of its main norm.
    adn's own checkpoints of the converted model (twins included) load too. Returns ``model``.
    """
    from ..checkpoint import extract_state_dict, load_checkpoint, load_state_dict_compat

    what = "the state dict" if isinstance(source, Mapping) else str(source)
    obj = source if isinstance(source, Mapping) else load_checkpoint(source, weights_only=weights_only)
    if isinstance(obj, Mapping) and "model" not in obj and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]  # timm's training checkpoints
    state_dict = extract_state_dict(obj, what)
    expected = model.state_dict()
    fits = all(k in expected and getattr(v, "shape", None) == expected[k].shape for k, v in state_dict.items())
    if fits and all(k in state_dict or ".skip_norm." in k or k.startswith("calibration.") for k in expected):
        # The original's names as they are (no renaming of published ``<norm>_skip`` twins: timm has norms
        # called ``*_skip``); twins the file lacks start as copies of their main norms.
        model.load_state_dict(state_dict, strict=False)
        if any(k not in state_dict for k in expected if ".skip_norm." in k):
            init_skip_norms_from_main(model)
        return model
    try:
        load_state_dict_compat(model, state_dict)  # DDP/compile prefixes, published twin names ...
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    return model
