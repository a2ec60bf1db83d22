"""ConvNeXt-ADN: torchvision's ConvNeXt (same modules, same parameter names) on the shared skip mechanism.

torchvision keeps the stem, the four stages and the downsampling layers between them in one ``features``
sequence (``features.1`` = stage 1, ``features.2`` = its downsampling, ...). Each stage's ``CNBlock`` sequence
is a stage here: the last ``floor(n/2)`` blocks are skippable, the ``LayerNorm`` of each mandatory block has a
twin, and the mandatory blocks of a skipped stage run without stochastic depth (as Swin-ADN). torchvision's
ImageNet state dict loads into the super-net path (twins start as copies of their main norms).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision.models import convnext as tv
from torchvision.ops import StochasticDepth

from ..core.network import AdaptiveDepthNet
from .registry import register_model


class ConvNeXt(AdaptiveDepthNet, tv.ConvNeXt):
    """torchvision's ConvNeXt whose stages have skippable second halves (forward: torchvision's).

    ``channels``/``depths``: width and block count of each stage (every depth at least 2); other arguments are
    torchvision's (``stochastic_depth_prob``, ``layer_scale``, ``num_classes``).
    """

    def __init__(self, channels: Sequence[int], depths: Sequence[int], **kwargs: Any) -> None:
        widths = [*channels[1:], None]
        setting = [tv.CNBlockConfig(c, out, d) for c, out, d in zip(channels, widths, depths, strict=True)]
        super().__init__(block_setting=setting, **kwargs)
        # features = [stem, stage 1, downsampling, stage 2, downsampling, stage 3, downsampling, stage 4]
        self.set_stages([list(stage) for stage in self.features[1::2]], skipped_inactive=(StochasticDepth,))

    def forward_features_plain(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head_plain(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        head = self.classifier[:-1] if pre_logits else self.classifier  # classifier: norm, flatten, linear
        return head(self.avgpool(x))


@register_model(
    input_size=224,
    classifier="classifier.2",
    # no published ADN results: adn.count_flops at 224 px of the sub-networks, kept as the reference counts
    published_by="adn",
    published={
        "FFFF": (4.46, None),
        "TFFF": (4.21, None),
        "TTFF": (3.97, None),
        "TTTF": (3.03, None),
        "TTTT": (2.80, None),
    },
    test_kwargs={"num_classes": 10, "channels": (8, 16, 32, 64)},
)
def convnext_tiny(num_classes: int = 1000, stochastic_depth_prob: float = 0.1, **kwargs: Any) -> ConvNeXt:
    """ConvNeXt-Tiny-ADN: depths [3, 3, 9, 3], skippable [1, 1, 4, 1]; channels 96 to 768."""
    config: dict[str, Any] = dict(channels=(96, 192, 384, 768), depths=(3, 3, 9, 3))
    config.update(kwargs)
    return ConvNeXt(num_classes=num_classes, stochastic_depth_prob=stochastic_depth_prob, **config)
