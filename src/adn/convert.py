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
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .skip import NORM_TYPES, AdaptiveDepthNet, init_skip_norms_from_main

__all__ = ["FAMILIES", "Family", "adaptive_class", "convert", "create_converted", "load_pretrained"]

Blocks = list[nn.Module]
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_GENERIC_SHARED = ("downsample", "shortcut", "proj")
_DEFAULT_INPUT = 224


# ------------------------------------------------------------------------------------------- the family table
@dataclass(frozen=True)
class Family:
    """How to find the stages of one model family from its own attributes.

    ``classes``: ``"module:QualName"`` of the family's classes (matched anywhere in the model's MRO, without
    importing anything). ``looks_for``: where the stages are, in words. ``stages(model)``: candidate stages, each
    a list of blocks in execution order (groups of one block are dropped). ``flat``: ``stages`` returns one run of
    identical layers, grouped into ``num_stages``.
    ``stage_twins(model, stages)`` and ``skipped_inactive()``: the declarations passed on to
    :meth:`AdaptiveDepthNet.set_stages`.
    """

    name: str
    classes: tuple[str, ...]
    looks_for: str  # where the stages are, for error messages
    stages: Callable[[nn.Module], list[Blocks]]
    shared_norms: tuple[str, ...] = ()
    flat: bool = False
    stage_twins: Callable[[nn.Module, list[Blocks]], dict[int, Blocks]] | None = None
    skipped_inactive: Callable[[], tuple[type[nn.Module], ...]] | None = None

    def matches(self, model: nn.Module) -> bool:
        return any(f"{c.__module__}:{c.__qualname__}" in self.classes for c in type(model).__mro__)


def _split_at_non_residual(blocks: Sequence[nn.Module], residual: Callable[[nn.Module], bool]) -> list[Blocks]:
    """MobileNet-style grouping: a new group starts at every block that is not residual."""
    groups: list[Blocks] = []
    for block in blocks:
        if groups and residual(block):
            groups[-1].append(block)
        else:
            groups.append([block])
    return groups


def _layers(model: nn.Module) -> list[Blocks]:
    return [list(getattr(model, f"layer{i}")) for i in range(1, 5) if hasattr(model, f"layer{i}")]


def _tv_convnext(model: nn.Module) -> list[Blocks]:
    from torchvision.models.convnext import CNBlock

    return [list(m) for m in model.features if type(m) is nn.Sequential and all(isinstance(b, CNBlock) for b in m)]


def _tv_mobilenet(model: nn.Module) -> list[Blocks]:
    return _split_at_non_residual(model.features[1:-1], lambda b: bool(getattr(b, "use_res_connect", False)))


def _tv_mobilenet_v2_twins(model: nn.Module, stages: list[Blocks]) -> dict[int, Blocks]:
    # As the registered mobilenet_v2 (the reference implementation): the stem and the blocks before the first
    # stage follow the first stage's flag, the blocks after the last stage and the last 1x1 conv the last one's.
    inside = {id(b) for s in stages for b in s}
    blocks = list(model.features)
    first = next(i for i, b in enumerate(blocks) if id(b) in inside)
    last = max(i for i, b in enumerate(blocks) if id(b) in inside)
    return {0: blocks[:first], -1: blocks[last + 1 :]}


def _tv_swin_merges(model: nn.Module, stages: list[Blocks]) -> dict[int, Blocks]:
    return {i: [merge] for i, merge in enumerate(model.features[2::2], start=1)}  # merging before stage i


def _stochastic_depth() -> tuple[type[nn.Module], ...]:
    from torchvision.ops import StochasticDepth

    return (StochasticDepth,)


FAMILIES: list[Family] = [
    Family("torchvision ResNet", ("torchvision.models.resnet:ResNet",), "layer1..layer4", _layers, ("downsample",)),
    Family(
        "torchvision RegNet",
        ("torchvision.models.regnet:RegNet",),
        "the blocks of each trunk_output stage",
        lambda m: [list(stage) for stage in m.trunk_output],
        ("proj",),
    ),
    Family("torchvision ConvNeXt", ("torchvision.models.convnext:ConvNeXt",), "CNBlock runs in features", _tv_convnext),
    Family(
        "torchvision EfficientNet",
        ("torchvision.models.efficientnet:EfficientNet",),
        "features[1:-1]",
        lambda m: [list(stage) for stage in m.features[1:-1]],
    ),
    Family(
        "torchvision MobileNetV2",
        ("torchvision.models.mobilenetv2:MobileNetV2",),
        "features split at blocks without use_res_connect",
        _tv_mobilenet,
        stage_twins=_tv_mobilenet_v2_twins,
    ),
    Family(
        "torchvision MobileNetV3",
        ("torchvision.models.mobilenetv3:MobileNetV3",),
        "features split at blocks without use_res_connect",
        _tv_mobilenet,
    ),
    Family(
        "torchvision Swin Transformer",
        ("torchvision.models.swin_transformer:SwinTransformer",),
        "features[1::2]",
        lambda m: [list(stage) for stage in m.features[1::2]],
        stage_twins=_tv_swin_merges,
        skipped_inactive=_stochastic_depth,
    ),
    Family(
        "torchvision ViT",
        ("torchvision.models.vision_transformer:VisionTransformer",),
        "encoder.layers",
        lambda m: [list(m.encoder.layers)],
        flat=True,
    ),
    Family("timm ResNet", ("timm.models.resnet:ResNet",), "layer1..layer4", _layers, ("downsample",)),
    Family(
        "timm ConvNeXt",
        ("timm.models.convnext:ConvNeXt",),
        "stages[i].blocks",
        lambda m: [list(s.blocks) for s in m.stages],
    ),
    Family(
        "timm EfficientNet",
        ("timm.models.efficientnet:EfficientNet", "timm.models.mobilenetv3:MobileNetV3"),
        "blocks[i]",
        lambda m: [list(stage) for stage in m.blocks],
    ),
    Family(
        "timm ViT",
        ("timm.models.vision_transformer:VisionTransformer",),
        "blocks",
        lambda m: [list(m.blocks)],
        flat=True,
    ),
]


# ------------------------------------------------------------------------------------------- the probe
@dataclass
class _Call:
    order: int  # position of the module's first call in the forward pass
    count: int
    in_shape: tuple[int, ...] | None  # None unless called with exactly one tensor (and no keyword arguments)
    out_shape: tuple[int, ...] | None  # None unless it returned one tensor


def _first_param(model: nn.Module) -> torch.Tensor:
    return next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0))


def _probe_size(model: nn.Module, input_size: int | Sequence[int] | None) -> tuple[int, int]:
    """The probe's input resolution: ``input_size``, else what the model says it expects, else 224."""
    size: Any = input_size
    if size is None:
        embed = getattr(model, "patch_embed", None)
        cfg = getattr(model, "pretrained_cfg", None) or {}
        for candidate in (
            getattr(model, "image_size", None),  # torchvision ViT
            None if getattr(model, "dynamic_img_size", False) else getattr(embed, "img_size", None),  # timm ViT
            cfg.get("input_size", (None,))[1:] or None,  # timm: (C, H, W)
        ):
            if candidate:
                size = candidate
                break
    size = size or _DEFAULT_INPUT
    return (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))


def _probe(model: nn.Module, size: tuple[int, int]) -> dict[int, _Call]:
    """Shapes seen by every module in one eval forward of a ``1x3xHxW`` input, run on the meta device (no
    arithmetic, nothing of the model touched; a real batch-1 pass if an operation has no meta kernel)."""
    calls: dict[int, _Call] = {}

    def pre(module, args, kwargs):
        call = calls.get(id(module))
        if call is None:
            single = len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor)
            calls[id(module)] = _Call(len(calls), 1, tuple(args[0].shape) if single else None, None)
        else:
            call.count += 1

    def post(module, args, kwargs, output):
        call = calls[id(module)]
        if call.count == 1 and isinstance(output, torch.Tensor):
            call.out_shape = tuple(output.shape)

    ref = _first_param(model)
    dtype = ref.dtype if ref.is_floating_point() else torch.float32
    flags = [(m, m.training) for m in model.modules()]
    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(m.register_forward_hook(post, with_kwargs=True))
    model.eval()
    try:
        with torch.no_grad():
            try:
                tensors = itertools.chain(
                    model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False)
                )
                state = {n: torch.empty_like(t, device="meta") for n, t in tensors}
                x = torch.empty(1, 3, *size, device="meta", dtype=dtype)
                torch.func.functional_call(model, state, (x,), strict=False)
            except Exception as meta_error:
                calls.clear()
                if ref.device.type == "meta":
                    raise meta_error
                model(torch.randn(1, 3, *size, device=ref.device, dtype=dtype))
    except Exception as exc:
        raise ValueError(
            f"cannot convert {type(model).__name__}: its forward fails on a 1x3x{size[0]}x{size[1]} probe "
            f"({type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}); "
            "pass input_size=... (the resolution the model expects)"
        ) from None
    finally:
        for h in handles:
            h.remove()
        for m, training in flags:
            m.training = training
    return calls


def _has_weights(module: nn.Module) -> bool:
    """Whether ``module`` has parameters outside its norm layers."""
    norm_params = {id(p) for m in module.modules() if isinstance(m, NORM_TYPES) for p in m.parameters()}
    return any(id(p) not in norm_params for p in module.parameters())


def _passes_input_through(block: nn.Module, shape: tuple[int, ...], ref: torch.Tensor) -> bool | str:
    """The residual test: with every parameter of ``block`` zeroed except its norms', does its output still
    depend on its input? (Two random inputs, one batch-1 call each.) A string says why the test could not run."""
    device = torch.device("cpu") if ref.device.type == "meta" else ref.device
    dtype = ref.dtype if ref.is_floating_point() else torch.float32
    norm_params = {id(p) for m in block.modules() if isinstance(m, NORM_TYPES) for p in m.parameters()}

    def real(name: str, t: torch.Tensor, zero: bool) -> torch.Tensor:
        if t.device.type != "meta" and not zero:
            return t
        if zero or not t.is_floating_point():
            return torch.zeros_like(t, device=device)
        unit = name.rsplit(".", 1)[-1] in ("weight", "running_var")  # a meta model's norms: identity-like
        return (torch.ones_like if unit else torch.zeros_like)(t, device=device)

    state = {n: real(n, p, id(p) not in norm_params) for n, p in block.named_parameters(remove_duplicate=False)}
    state.update({n: real(n, b, False) for n, b in block.named_buffers(remove_duplicate=False)})
    flags = [(m, m.training) for m in block.modules()]
    block.eval()
    try:
        with torch.no_grad():
            generator = torch.Generator(device="cpu").manual_seed(0)
            a, b = (torch.randn(shape, generator=generator, device="cpu").to(device, dtype) for _ in range(2))
            out_a = torch.func.functional_call(block, state, (a,), strict=False)
            out_b = torch.func.functional_call(block, state, (b,), strict=False)
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ''}"
    finally:
        for m, training in flags:
            m.training = training
    return isinstance(out_a, torch.Tensor) and not torch.equal(out_a, out_b)


class _Inspector:
    """The probe's records plus cached residual tests."""

    def __init__(self, model: nn.Module, size: tuple[int, int]) -> None:
        self.model = model
        self.calls = _probe(model, size)
        self.ref = _first_param(model)
        self._residual: dict[int, bool | str] = {}

    def candidate(self, module: nn.Module) -> bool:
        call = self.calls.get(id(module))
        return (
            type(module) not in _CONTAINERS
            and not isinstance(module, NORM_TYPES)
            and call is not None
            and call.count == 1
            and call.in_shape is not None
            and call.out_shape is not None
            and _has_weights(module)
        )

    def why_not_skippable(self, block: nn.Module) -> str | None:
        call = self.calls.get(id(block))
        if call is None:
            return "it does not run in the model's forward"
        if call.count != 1:
            return f"it runs {call.count} times per forward"
        if call.in_shape is None or call.out_shape is None:
            return "it is not called with one tensor returning one tensor"
        if call.in_shape != call.out_shape:
            return f"it changes the shape {call.in_shape} -> {call.out_shape}"
        self.residual(block)
        result = self._residual[id(block)]
        if isinstance(result, str):
            return f"its residual test fails to run ({result})"
        if not result:
            return "it has no identity shortcut (with its weights zeroed its output no longer depends on its input)"
        return None

    def residual(self, block: nn.Module) -> bool:
        """Whether ``block`` is a shape-preserving residual block (see the module docstring)."""
        key = id(block)
        if key not in self._residual:
            call = self.calls.get(key)
            shape_kept = (
                call is not None and call.count == 1 and call.in_shape is not None and call.in_shape == call.out_shape
            )
            self._residual[key] = shape_kept and _passes_input_through(block, call.in_shape, self.ref)
        return self._residual[key] is True

    def order(self, block: nn.Module) -> int:
        call = self.calls.get(id(block))
        return call.order if call is not None else math.inf  # type: ignore[return-value]


def _generic_stages(inspector: _Inspector) -> tuple[list[Blocks], bool]:
    """The fallback (see the module docstring): stages, and whether the model is one flat run of layers."""
    stages: list[Blocks] = []

    def visit(module: nn.Module) -> bool:
        """Find stages below and in ``module``; whether it holds one."""
        children = list(module.children())
        held = [visit(child) for child in children]
        run: Blocks = []
        found = False

        def flush() -> None:
            nonlocal found
            if len(run) >= 2:
                for group in _split_at_non_residual(run, inspector.residual):
                    if len(group) >= 2:
                        stages.append(group)
                        found = True
            run.clear()

        for child, child_holds in zip(children, held, strict=True):
            if child_holds or not inspector.candidate(child) or (run and type(child) is not type(run[0])):
                flush()
            if not child_holds and inspector.candidate(child):
                run.append(child)
        flush()
        return found or any(held)

    visit(inspector.model)
    stages.sort(key=lambda s: inspector.order(s[0]))
    flat = len(stages) == 1 and inspector.residual(stages[0][0])
    return stages, flat


def _group(layers: Blocks, num_stages: int | None, what: str) -> list[Blocks]:
    """``layers`` as ``num_stages`` consecutive groups of near-equal size, the larger ones first."""
    n = len(layers)
    k = num_stages if num_stages is not None else max(1, min(4, n // 2))
    if k < 1 or n < 2 * k:
        raise ValueError(
            f"cannot convert {what}: num_stages={k} needs at least {2 * k} layers and the model has {n}; "
            f"pass num_stages=1..{max(1, n // 2)}"
        )
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    out, start = [], 0
    for size in sizes:
        out.append(layers[start : start + size])
        start += size
    return out


# ------------------------------------------------------------------------------------------- the class swap
_CLASSES: dict[type, type] = {}


class _OwnStages:
    """``model.stages``: the original model's own ``stages`` submodule if it has one (timm's ConvNeXt runs
    ``self.stages(x)``), else the adaptive-depth stage list (:attr:`AdaptiveDepthNet.stages`)."""

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        own = obj.__dict__.get("_modules", {}).get("stages")
        return own if own is not None else AdaptiveDepthNet.stages.fget(obj)


def _reduce_ex(self: nn.Module, protocol: int):
    return _restore, (type(self).__adn_original__,), self.__getstate__()


def _restore(original: type) -> nn.Module:
    """Unpickling: an empty instance of the converted class of ``original`` (its state is set next)."""
    return object.__new__(adaptive_class(original))


# AdaptiveDepthNet's names a model class must not define itself (forward, train, extra_repr, _load_from_state_dict,
# __getstate__ and __setstate__ are overridden cooperatively: they call the original's through super()).
_OVERRIDDEN = {"forward", "train", "extra_repr", "_load_from_state_dict", "__getstate__", "__setstate__"}
# ``stages`` may be an instance attribute or submodule (see _OwnStages), not a class attribute.
_RESERVED = (
    (
        {k for k in vars(AdaptiveDepthNet) if not k.startswith("__")}
        | {"layout", "calibration", "adaptive_stages"}
        | {"_skip", "_fixed", "_paths", "_calibrated_paths", "_path_pairs", "_paths_valid"}
    )
    - _OVERRIDDEN
    - {"stages"}
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
            "stages": _OwnStages(),
            "adaptive_stages": AdaptiveDepthNet.stages,
            "skippable_blocks": lambda self: [self.get_submodule(n) for _, s in self.layout.stages for n in s],
        }
        cls = type(f"Adaptive{original.__name__}", (AdaptiveDepthNet, original), namespace)
        _CLASSES[original] = cls
    return cls


def _clashes(model: nn.Module) -> list[str]:
    in_class = {k for c in type(model).__mro__ if c is not nn.Module and c is not object for k in vars(c)}
    in_instance = set(model.__dict__) | set(model._modules) | set(model._parameters) | set(model._buffers)
    return sorted((_RESERVED | {"stages"}) & in_class | _RESERVED & in_instance)


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
    inspector: _Inspector,
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
        (found, flat), source = _generic_stages(inspector), _GENERIC_SOURCE
    if flat and found:
        found = _group([b for s in found for b in s], num_stages, name)
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

    inspector = _Inspector(model, _probe_size(model, input_size))
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
    from .checkpoint import extract_state_dict, load_checkpoint, load_state_dict_compat

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
