"""MobileNetV2-ADN: torchvision's MobileNetV2 (same modules, same parameter names) on the shared skip mechanism.

Every inverted-residual stage with at least 2 blocks is a skippable stage (24, 32, 64, 96 and 160 channels:
``features.2-3``, ``4-6``, ``7-10``, ``11-13``, ``14-16``). As in the reference implementation, the norms
outside the stages have twins too: the stem and the 16-channel block's (``features.0``, ``features.1``) are
driven by the first stage's flag, the 320-channel block's and the last 1x1 convolution's (``features.17``,
``features.18``) by the last stage's. torchvision's ImageNet state dict loads into the super-net path, and the
reference's checkpoints (``conv_layer``/``norm`` names, nested stages) load too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchvision.models import mobilenetv2 as tv

from ..core.network import AdaptiveDepthNet
from .registry import register_model

#: torchvision's setting: expansion t, channels c, blocks n, stride s of each inverted-residual row
DEFAULT_SETTING = [
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


class MobileNetV2(AdaptiveDepthNet, tv.MobileNetV2):
    """torchvision's MobileNetV2 whose multi-block rows are skippable stages (forward: torchvision's)."""

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
        self.setting = setting
        if small_input:  # CIFAR-style stem for 32x32 inputs: keep the full resolution in the first layer
            self.features[0][0].stride = (1, 1)
        # features = [stem, blocks of setting row 0, row 1, ..., last 1x1 conv]; rows with >= 2 blocks are stages
        stages, before, after, start = [], [self.features[0]], [], 1
        for _t, _c, n, _s in setting:
            blocks = list(self.features[start : start + n])
            if n >= 2:
                stages.append(blocks)
            else:  # one-block rows: twins driven by the nearest stage's flag (the reference: first or last)
                (before if not stages else after).extend(blocks)
            start += n
        self.set_stages(stages, stage_twins={0: before, -1: [*after, self.features[-1]]})

    def forward_features_plain(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head_plain(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, (1, 1)), 1)  # as torchvision's forward
        return x if pre_logits else self.classifier(x)

    def from_reference(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The reference implementation's names -> ours: ``features.<row>[.<block>].conv.<k>.conv_layer/norm``
        -> torchvision's flat ``features.<i>.conv.<k>.0/1`` (the projection: ``conv.<k>`` / ``conv.<k+1>``)."""
        if not any(".conv_layer." in k for k in state_dict):
            return dict(state_dict)
        flat, start = {"0": "0", str(len(self.setting) + 1): str(len(self.features) - 1)}, 1
        for row, (t, _c, n, _s) in enumerate(self.setting, start=1):
            for j in range(n):
                flat[f"{row}.{j}" if n >= 2 else str(row)] = (str(start + j), t)
            start += n
        out = {}
        for key, value in state_dict.items():
            m = re.match(r"features\.(\d+(?:\.\d+)?)\.(?:conv\.(\d+)\.)?(conv_layer|norm)\.(.*)", key)
            if m is None:  # the classifier: same names
                out[key] = value
                continue
            where, k, part, rest = m.groups()
            target = flat[where]
            if k is None:  # stem or last conv: Conv2dNormActivation (0 = conv, 1 = norm)
                out[f"features.{target}.{'0' if part == 'conv_layer' else '1'}.{rest}"] = value
                continue
            index, t = target
            last = 2 if t != 1 else 1  # the projection: plain conv + norm in torchvision
            k = int(k)
            if k == last:
                out[f"features.{index}.conv.{k if part == 'conv_layer' else k + 1}.{rest}"] = value
            else:
                out[f"features.{index}.conv.{k}.{'0' if part == 'conv_layer' else '1'}.{rest}"] = value
        return out


@register_model(
    input_size=224,
    classifier="classifier.1",
    published={"FFFFF": (0.32, 72.5), "TTTTT": (0.22, 70.6)},
    # the published figures also count element-wise layers (BN, ReLU6, residual adds), ~6 % of this small net
    flops_tolerance=0.07,
    test_kwargs={"num_classes": 10, "width_mult": 0.25},
)
def mobilenet_v2(num_classes: int = 1000, **kwargs: Any) -> MobileNetV2:
    """MobileNetV2-ADN: stages [2, 3, 4, 3, 3] (24 to 160 channels), skippable [1, 1, 2, 1, 1]."""
    return MobileNetV2(num_classes=num_classes, **kwargs)


@register_model(input_size=32, classifier="classifier.1", test_kwargs={"num_classes": 10, "width_mult": 0.25})
def mobilenet_v2_cifar(num_classes: int = 1000, width_mult: float = 0.5, **kwargs: Any) -> MobileNetV2:
    """CIFAR-style MobileNetV2-ADN (32x32 input, stride-1 stem, width 0.5): CPU-friendly, 5 skippable stages."""
    return MobileNetV2(num_classes=num_classes, width_mult=width_mult, small_input=True, **kwargs)
