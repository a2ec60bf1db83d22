"""``adn.convert``: turn an existing residual classifier (torchvision, timm, your own) into an adaptive-depth
model, in place.

:func:`convert` keeps the model's module tree, its parameter names and its own ``forward``; it finds the
residual *stages*, makes the last ``floor(n/2)`` blocks of each stage of ``n >= 2`` blocks skippable, gives the
norms of the mandatory blocks their twins (copies of the main norms) and swaps the instance's class for a cached
subclass ``(AdaptiveDepthNet, OriginalClass)``. The result *is* an :class:`~adn.core.network.AdaptiveDepthNet` (and
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

from collections.abc import Mapping, Sequence

from torch import nn

from ..core.network import AdaptiveDepthNet
from .builders import create_converted, load_pretrained
from .classes import _clashes, _restore, adaptive_class  # noqa: F401  (_restore: what pickles name)
from .discover import discover, resolve_twins
from .families import FAMILIES, Blocks, Family
from .probe import Inspector, probe_size

__all__ = ["FAMILIES", "Family", "adaptive_class", "convert", "create_converted", "load_pretrained"]

_GENERIC_SHARED = ("downsample", "shortcut", "proj")


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
    found, family, source = discover(model, inspector, stages, num_stages)
    _check_skippable(model, inspector, found, source)
    if shared_norms is None:
        shared_norms = family.shared_norms if family is not None else _GENERIC_SHARED
    if stage_twins is not None:
        twins = resolve_twins(model, stage_twins)
    else:
        twins = family.stage_twins(model, found) if family is not None and family.stage_twins else {}
    if skipped_inactive is None:
        skipped_inactive = family.skipped_inactive() if family is not None and family.skipped_inactive else ()
    _swap(model, found, tuple(shared_norms), twins, skipped_inactive)
    return model


def _check_skippable(model: nn.Module, inspector: Inspector, found: list[Blocks], source: str) -> None:
    """Every block that will be skippable must be residual (checked before anything is changed)."""
    names = {id(m): n for n, m in model.named_modules()}
    for i, blocks in enumerate(found):
        for block in blocks[len(blocks) - len(blocks) // 2 :]:
            why = inspector.why_not_skippable(block)
            if why is not None:
                raise ValueError(
                    f"cannot convert {type(model).__name__}: block {names.get(id(block), '?')!r} of stage {i} "
                    f"({source}) cannot be skipped: {why}"
                )


def _swap(model: nn.Module, found: list[Blocks], shared_norms: tuple[str, ...], twins, skipped_inactive) -> None:
    """Give ``model`` its adaptive class and declare its stages; on any failure, the model as it was."""
    original = type(model)
    model.__class__ = adaptive_class(original)
    try:
        model.set_stages(found, shared_norms=shared_norms, stage_twins=twins, skipped_inactive=skipped_inactive)
    except BaseException:
        model.__class__ = original
        for m in model.modules():
            m._modules.pop("skip_norm", None)
        for key in ("layout", "_skip", "_fixed", "_paths", "_calibrated_paths", "_path_pairs", "_paths_valid"):
            model.__dict__.pop(key, None)
        raise
