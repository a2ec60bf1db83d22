"""MobileNetV2-ADN: torchvision's MobileNetV2 (same modules, same parameter names) on the shared skip mechanism.

Every inverted-residual stage with at least 2 blocks is a skippable stage (24, 32, 64, 96 and 160 channels:
``features.2-3``, ``4-6``, ``7-10``, ``11-13``, ``14-16``); the one-block stages (16 and 320 channels), the
stem, the last 1x1 convolution and the classifier always run. torchvision's ImageNet state dict loads into
the super-net path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models import mobilenetv2 as tv

from ..registry import register_model
from ..skip import AdaptiveDepthNet, SkipLike

#: torchvision's setting: expansion t, channels c, blocks n, stride s of each inverted-residual stage
DEFAULT_SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]


class MobileNetV2(AdaptiveDepthNet, tv.MobileNetV2):
    """torchvision's MobileNetV2 whose multi-block stages have skippable second halves."""

    def __init__(
        self,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        inverted_residual_setting: list[list[int]] | None = None,
        small_input: bool = False,
        **kwargs: Any,
    ) -> None:
        setting = inverted_residual_setting or DEFAULT_SETTING
        super().__init__(num_classes=num_classes, width_mult=width_mult, inverted_residual_setting=setting, **kwargs)
        if small_input:  # CIFAR-style stem for 32x32 inputs: keep the full resolution in the first layer
            self.features[0][0].stride = (1, 1)
        # features = [stem, blocks of setting row 0, row 1, ..., last 1x1 conv]; rows with >= 2 blocks are stages
        stages, self._stage_at, start = [], {}, 1
        for _t, _c, n, _s in setting:
            if n >= 2:
                self._stage_at[start] = len(stages)
                stages.append(list(self.features[start : start + n]))
            start += n
        self.set_stages(stages)

    def forward(self, x: torch.Tensor, skip: SkipLike = None) -> torch.Tensor:
        skip = self.resolve_skip(skip)
        i = 0
        while i < len(self.features):
            s = self._stage_at.get(i)
            if s is None:  # stem, one-block stages, last 1x1 conv
                x = self.features[i](x)
                i += 1
            else:
                x = self.stages[s](x, skip[s])
                i += len(self.stages[s])
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


@register_model(
    input_size=224,
    published={"FFFFF": (0.32, 72.5), "TTTTT": (0.22, 70.6)},
    # the published figures also count element-wise layers (BN, ReLU6, residual adds), ~6 % of this small net
    flops_tolerance=0.07,
    test_kwargs={"num_classes": 10, "width_mult": 0.25},
)
def mobilenet_v2(num_classes: int = 1000, **kwargs: Any) -> MobileNetV2:
    """MobileNetV2-ADN: stages [2, 3, 4, 3, 3] (24 to 160 channels), skippable [1, 1, 2, 1, 1]."""
    return MobileNetV2(num_classes=num_classes, **kwargs)


@register_model(input_size=32, test_kwargs={"num_classes": 10, "width_mult": 0.25})
def mobilenet_v2_cifar(num_classes: int = 1000, width_mult: float = 0.5, **kwargs: Any) -> MobileNetV2:
    """CIFAR-style MobileNetV2-ADN (32x32 input, stride-1 stem, width 0.5): CPU-friendly, 5 skippable stages."""
    return MobileNetV2(num_classes=num_classes, width_mult=width_mult, small_input=True, **kwargs)
