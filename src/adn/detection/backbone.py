"""Adaptive-depth FPN backbones: an adn model's stages feeding torchvision's FeaturePyramidNetwork.

The *body* is any :class:`~adn.core.network.AdaptiveDepthNet` with NCHW stage outputs (a registered ResNet, a converted
torchvision/timm residual network, :func:`tiny_resnet` for CPU). For skip config ``c`` the backbone reads the
body's stage outputs with the timm contract's ``body.forward_intermediates(x, stages, skip=c,
intermediates_only=True)``: the body's own path for ``c`` (the one skip mechanism), stopped after the last stage
the FPN reads, so its pooling and classifier never run. Nothing is written to the model per call: calls with
different configs may run at once in threads.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork

from ..core.checkpoint import extract_state_dict, load_checkpoint, load_state_dict_compat
from ..core.network import TWIN, AdaptiveDepthNet
from ..core.skipconfig import SkipLike
from ..core.tree import shallow_copy
from ..models.resnet import ResNet

__all__ = ["AdaptiveFPNBackbone", "build_body", "freeze_batch_norms", "tiny_resnet"]


def tiny_resnet(widths: Sequence[int] = (32, 64, 128, 256), blocks: int = 2) -> ResNet:
    """A narrow ResNet-18-ADN for CPU runs: ``len(widths)`` stages of ``blocks`` BasicBlocks (the second half of
    each skippable) behind a light stride-4 stem (3x3 conv of ``widths[0]`` channels, stride 2, and max-pool), so
    that the stages, not a 64-channel 7x7 stem, hold most of the compute."""
    model = ResNet(BasicBlock, [blocks] * len(widths), list(widths), num_classes=10, small_input=True)
    model.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=2, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    return model


def _drop_classifier(body: AdaptiveDepthNet) -> None:
    """Replace the classifier by ``Identity``: detection never uses it (and DDP must not wait for its gradient)."""
    name = body.classifier_name()
    parent, _, leaf = name.rpartition(".")
    setattr(body.get_submodule(parent) if parent else body, leaf, nn.Identity())


def freeze_batch_norms(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d (twins included, each staying its norm's twin) by a FrozenBatchNorm2d holding
    its statistics and affine parameters -- torchvision's detection convention for pretrained backbones."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            twin = child._modules.get(TWIN)
            if twin is not None:
                frozen.add_module(TWIN, freeze_batch_norms(nn.Sequential(twin))[0])
            setattr(module, name, frozen)
        else:
            freeze_batch_norms(child)
    return module


def build_body(
    backbone: str | nn.Module, weights: str | None = None, frozen_bn: bool = False, trainable_stages: int | None = None
) -> AdaptiveDepthNet:
    """The adaptive-depth body of a detector: a registered/converted model name (``"resnet50"``,
    ``"tv:resnet18"``, ``"timm:resnet18"``, ``"tiny"``) or a model (converted with :func:`adn.convert` if it is
    not adaptive yet). ``weights``: an adn classification checkpoint, torchvision's or a published ADN file (twins
    are carried over; a file without twins initialises them from the main norms); its classifier and calibrated
    statistics are dropped. ``frozen_bn``: FrozenBatchNorm2d everywhere, twins too. ``trainable_stages``: train only
    the last N stages (stem and earlier stages frozen, as torchvision's ``trainable_backbone_layers``)."""
    from .. import convert, create_model

    if isinstance(backbone, str):
        body = tiny_resnet() if backbone == "tiny" else create_model(backbone)
    else:
        body = backbone if isinstance(backbone, AdaptiveDepthNet) else convert(backbone)
    classifier = body.classifier_name()
    if weights is not None:
        state = extract_state_dict(load_checkpoint(weights), weights)
        keep = {k: v for k, v in state.items() if not k.startswith((classifier + ".", "calibration."))}
        _drop_classifier(body)
        load_state_dict_compat(body, keep)
    else:
        _drop_classifier(body)
    body._modules.pop("calibration", None)  # statistics of classification images do not fit detection inputs
    if frozen_bn:
        freeze_batch_norms(body)
    if trainable_stages is not None:
        _freeze_early(body, trainable_stages)
    body.build_subnets()
    return body


def _freeze_early(body: AdaptiveDepthNet, trainable: int) -> None:
    if not 0 <= trainable <= body.num_stages:
        raise ValueError(f"trainable_stages must be in 0..{body.num_stages}, got {trainable}")
    trained = body.layout.stages[body.num_stages - trainable :]
    keep = {n for mandatory, skippable in trained for n in mandatory + skippable}
    for name, p in body.named_parameters():
        p.requires_grad_(any(name.startswith(k + ".") for k in keep))


class AdaptiveFPNBackbone(nn.Module):
    """``body`` stages -> FPN. ``forward(x)`` runs sub-network :attr:`skip` (set on per-call copies by the
    detector, never on the model itself); returns the FPN's ``OrderedDict`` of feature maps, as torchvision's
    ``BackboneWithFPN``. ``stages``: which stages feed the FPN (default: all)."""

    skip: SkipLike = None

    def __init__(
        self,
        body: AdaptiveDepthNet,
        out_channels: int = 256,
        stages: Sequence[int] | None = None,
        extra_blocks: ExtraFPNBlock | None = None,
        probe_size: int = 64,
    ) -> None:
        super().__init__()
        self.body = body
        self.stages = tuple(range(body.num_stages) if stages is None else sorted(stages))
        if not self.stages or not all(0 <= i < body.num_stages for i in self.stages):
            raise ValueError(f"stages must be indices in 0..{body.num_stages - 1}, got {stages}")
        channels, self.strides = self._probe(probe_size)
        self.fpn = FeaturePyramidNetwork(channels, out_channels, extra_blocks=extra_blocks)
        self.out_channels = out_channels

    @torch.no_grad()
    def _probe(self, size: int) -> tuple[list[int], list[int]]:
        was = self.body.training
        self.body.eval()
        try:
            x = torch.zeros(1, 3, size, size, device=next(self.body.parameters()).device)
            outs = self.stage_outputs(x, skip=None)
        finally:
            self.body.train(was)
        if any(o.ndim != 4 for o in outs):
            raise ValueError("the backbone's stages must return NCHW feature maps (convolutional networks)")
        return [o.shape[1] for o in outs], [size // o.shape[-1] for o in outs]

    def stage_outputs(self, x: torch.Tensor, skip: SkipLike = None) -> list[torch.Tensor]:
        """The outputs of the returned stages of sub-network ``skip`` of the body."""
        return self.body.forward_intermediates(x, self.stages, skip=skip, intermediates_only=True)

    def forward(self, x: torch.Tensor) -> Mapping[str, torch.Tensor]:
        outs = self.stage_outputs(x, self.skip)
        return self.fpn(OrderedDict((str(i), o) for i, o in enumerate(outs)))

    def at(self, skip: SkipLike) -> AdaptiveFPNBackbone:
        """A shallow copy (same modules, parameters and buffers) that runs sub-network ``skip``."""
        bound = shallow_copy(self)
        bound.__dict__["skip"] = self.body.resolve_skip(skip)
        return bound
