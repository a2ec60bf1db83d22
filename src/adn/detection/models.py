"""Detectors whose backbone depth is picked per call: torchvision's Faster R-CNN, Mask R-CNN and RetinaNet on an
adaptive-depth FPN backbone.

``det(images, targets=None, skip=c)`` runs torchvision's own detector forward on a *per-call view* of it: a
shallow copy of the detector whose backbone is bound to ``c`` (:meth:`AdaptiveFPNBackbone.at`), itself running
the body's path for ``c``. Heads, FPN and body are the same objects as the model's; nothing is written to the
model per call, so threads may run different sub-networks at once, and the model pickles like any module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from ..core.checkpoint import extract_state_dict, load_checkpoint, load_state_dict_compat
from ..core.skipconfig import SkipLike, default_skip, format_skip
from ..core.tree import shallow_copy
from .backbone import AdaptiveFPNBackbone, build_body

__all__ = [
    "KINDS",
    "AdaptiveDetector",
    "build_detector",
    "fasterrcnn",
    "load_detector_weights",
    "maskrcnn",
    "retinanet",
]

KINDS = ("fasterrcnn", "maskrcnn", "retinanet")


class AdaptiveDetector(nn.Module):
    """A torchvision detector (``.detector``) on an :class:`AdaptiveFPNBackbone`; ``kind`` is one of :data:`KINDS`.

    ``forward(images, targets=None, skip=None)`` is torchvision's forward (losses in train mode, detections in
    eval mode) for sub-network ``skip`` (default :attr:`skip`, the super-net). ``distill=True`` returns what the
    self-distillation step needs instead (:meth:`outputs`).
    """

    def __init__(self, detector: FasterRCNN | RetinaNet, kind: str) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        self.detector, self.kind = detector, kind
        self._skip = (False,) * self.num_stages

    @property
    def backbone(self) -> AdaptiveFPNBackbone:
        return self.detector.backbone

    @property
    def body(self) -> nn.Module:
        """The adaptive-depth backbone body (an :class:`~adn.core.network.AdaptiveDepthNet`)."""
        return self.detector.backbone.body

    @property
    def num_stages(self) -> int:
        return self.body.num_stages

    @property
    def num_classes(self) -> int:
        """Classes including background (torchvision's convention for R-CNN; RetinaNet's ``num_classes``)."""
        if self.kind == "retinanet":
            return self.detector.head.classification_head.num_classes
        return self.detector.roi_heads.box_predictor.cls_score.out_features

    @property
    def skip(self) -> tuple[bool, ...]:
        return self._skip

    @skip.setter
    def skip(self, value: SkipLike) -> None:
        self._skip = default_skip(value, self.num_stages)

    def resolve_skip(self, skip: SkipLike) -> tuple[bool, ...]:
        return self._skip if skip is None else self.body.resolve_skip(skip)

    def subnet(self, skip: SkipLike = None) -> nn.Module:
        """Sub-network ``skip`` as a plain torchvision detector sharing this model's modules (a view: its
        ``train()``/``eval()`` reach the shared modules)."""
        view = shallow_copy(self.detector)
        view.__dict__["_modules"] = {**self.detector._modules, "backbone": self.backbone.at(self.resolve_skip(skip))}
        return view

    def forward(
        self,
        images: Sequence[torch.Tensor],
        targets: Sequence[Mapping[str, torch.Tensor]] | None = None,
        skip: SkipLike = None,
        *,
        distill: bool = False,
        proposals: Sequence[torch.Tensor] | int | None = None,
    ) -> Any:
        if distill:
            return self.outputs(images, targets, skip, proposals)
        return self.subnet(skip)(list(images), None if targets is None else list(targets))

    def outputs(
        self,
        images: Sequence[torch.Tensor],
        targets: Sequence[Mapping[str, torch.Tensor]],
        skip: SkipLike = None,
        proposals: Sequence[torch.Tensor] | int | None = None,
    ) -> dict[str, Any]:
        """Training-mode pieces of sub-network ``skip``: ``losses`` (torchvision's dict), ``features`` (the FPN
        maps), ``logits`` (per-anchor class logits for RetinaNet; R-CNN: the box head's class logits on
        ``proposals`` -- boxes per image, or an int k: this pass's own k best RPN proposals per image, default
        all), ``objectness`` (R-CNN: the RPN's per-anchor logits, one tensor per level) and ``proposals``
        (R-CNN: the boxes the logits are for, detached)."""
        if targets is None:
            raise ValueError("outputs() needs targets (it computes the training losses)")
        det = self.subnet(skip)
        image_list, targets = det.transform(list(images), [dict(t) for t in targets])
        features = det.backbone(image_list.tensors)
        levels = list(features.values())
        if self.kind == "retinanet":
            head = det.head(levels)
            anchors = det.anchor_generator(image_list, levels)
            losses = det.compute_loss(targets, head, anchors)
            return {"losses": losses, "features": levels, "logits": head["cls_logits"], "objectness": None}
        own, rpn_losses = det.rpn(image_list, features, targets)
        _, roi_losses = det.roi_heads(features, own, image_list.image_sizes, targets)
        objectness, _ = det.rpn.head(levels)
        if proposals is None or isinstance(proposals, int):  # the RPN returns them best first
            boxes = [p.detach()[:proposals] for p in own]
        else:
            boxes = [p.detach() for p in proposals]
        heads = det.roi_heads
        box_features = heads.box_head(heads.box_roi_pool(features, boxes, image_list.image_sizes))
        logits, _ = heads.box_predictor(box_features)
        return {
            "losses": {**rpn_losses, **roi_losses},
            "features": levels,
            "logits": logits,
            "objectness": objectness,
            "proposals": boxes,
        }

    def extra_repr(self) -> str:
        return f"kind={self.kind}, stages={self.num_stages}, skip={format_skip(self._skip)}"


def _anchors(strides: Sequence[int], scale: float, octaves: int) -> AnchorGenerator:
    sizes = tuple(tuple(int(round(scale * s * 2 ** (k / octaves))) for k in range(octaves)) for s in strides)
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(strides))


def build_detector(
    kind: str,
    backbone: str | nn.Module,
    num_classes: int,
    *,
    weights: str | None = None,
    frozen_bn: bool = False,
    trainable_stages: int | None = None,
    out_channels: int = 256,
    stages: Sequence[int] | None = None,
    anchor_scale: float | None = None,
    representation_size: int = 1024,
    mask_channels: Sequence[int] = (256, 256, 256, 256),
    min_size: int = 800,
    max_size: int = 1333,
    **kwargs: Any,
) -> AdaptiveDetector:
    """An :class:`AdaptiveDetector` of ``kind`` (:data:`KINDS`) for ``num_classes`` classes (background included
    for R-CNN, as torchvision counts) on ``backbone`` (see :func:`~adn.detection.backbone.build_body`, which
    ``weights``, ``frozen_bn`` and ``trainable_stages`` go to). ``stages``: body stages feeding the FPN (default:
    all; RetinaNet: all but the first, plus P6/P7 as torchvision). Anchors are ``anchor_scale`` x each level's
    stride (default 8 for R-CNN, 4 for RetinaNet: torchvision's 32 px at strides 4 and 8). ``representation_size``
    and ``mask_channels`` size the R-CNN box and mask heads (torchvision's defaults); other keywords go to the
    torchvision constructor (``rpn_post_nms_top_n_train``, ``box_batch_size_per_image`` ...)."""
    if kind not in KINDS:
        raise ValueError(f"unknown detector {kind!r}; choose from {', '.join(KINDS)}")
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background too and must be >= 2, got {num_classes}")
    body = build_body(backbone, weights, frozen_bn, trainable_stages)
    sizes = dict(min_size=min_size, max_size=max_size)
    if kind == "retinanet":
        stages = stages if stages is not None else (range(1, body.num_stages) if body.num_stages > 2 else None)
        fpn = AdaptiveFPNBackbone(body, out_channels, stages, LastLevelP6P7(out_channels, out_channels))
        strides = [*fpn.strides, fpn.strides[-1] * 2, fpn.strides[-1] * 4]
        anchors = _anchors(strides, anchor_scale or 4.0, 3)
        return AdaptiveDetector(RetinaNet(fpn, num_classes, anchor_generator=anchors, **sizes, **kwargs), kind)
    fpn = AdaptiveFPNBackbone(body, out_channels, stages, LastLevelMaxPool())
    names = [str(i) for i in range(len(fpn.stages))]
    rpn_anchors = _anchors([*fpn.strides, fpn.strides[-1] * 2], anchor_scale or 8.0, 1)
    common = dict(
        rpn_anchor_generator=rpn_anchors,
        box_roi_pool=MultiScaleRoIAlign(names, 7, 2),
        box_head=TwoMLPHead(out_channels * 49, representation_size),
        box_predictor=FastRCNNPredictor(representation_size, num_classes),
    )
    if kind == "fasterrcnn":
        return AdaptiveDetector(FasterRCNN(fpn, None, **sizes, **common, **kwargs), kind)
    mask = dict(
        mask_roi_pool=MultiScaleRoIAlign(names, 14, 2),
        mask_head=MaskRCNNHeads(out_channels, tuple(mask_channels), 1),
        mask_predictor=MaskRCNNPredictor(mask_channels[-1], mask_channels[-1], num_classes),
    )
    return AdaptiveDetector(MaskRCNN(fpn, None, **sizes, **common, **mask, **kwargs), kind)


def fasterrcnn(backbone: str | nn.Module = "resnet50", num_classes: int = 91, **kwargs: Any) -> AdaptiveDetector:
    """Faster R-CNN with an adaptive-depth FPN backbone (:func:`build_detector`)."""
    return build_detector("fasterrcnn", backbone, num_classes, **kwargs)


def maskrcnn(backbone: str | nn.Module = "resnet50", num_classes: int = 91, **kwargs: Any) -> AdaptiveDetector:
    """Mask R-CNN with an adaptive-depth FPN backbone (:func:`build_detector`)."""
    return build_detector("maskrcnn", backbone, num_classes, **kwargs)


def retinanet(backbone: str | nn.Module = "resnet50", num_classes: int = 91, **kwargs: Any) -> AdaptiveDetector:
    """RetinaNet with an adaptive-depth FPN backbone (:func:`build_detector`)."""
    return build_detector("retinanet", backbone, num_classes, **kwargs)


def load_detector_weights(det: AdaptiveDetector, source: str | Mapping[str, torch.Tensor]) -> AdaptiveDetector:
    """Load a whole-detector state dict: ours (``detector.*`` keys) or torchvision's (e.g. its COCO Faster
    R-CNN ResNet-50 FPN file; the twins, absent there, start as copies of their main norms)."""
    state = extract_state_dict(load_checkpoint(source), source) if isinstance(source, str) else source
    state = {k.removeprefix("detector."): v for k, v in state.items()}
    load_state_dict_compat(det.detector, state)
    det.body.build_subnets()
    return det
