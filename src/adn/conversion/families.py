"""The family table of :func:`adn.convert`: where each known model family keeps its residual stages, and what it
declares (shared norms, twins outside the stages, drop-path in skipped stages), read from the model's own
attributes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

__all__ = ["Blocks", "FAMILIES", "Family", "split_at_non_residual"]

Blocks = list[nn.Module]


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


def split_at_non_residual(blocks: Sequence[nn.Module], residual: Callable[[nn.Module], bool]) -> list[Blocks]:
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
    return split_at_non_residual(model.features[1:-1], lambda b: bool(getattr(b, "use_res_connect", False)))


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
