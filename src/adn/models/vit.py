"""ViT-ADN: torchvision's VisionTransformer (same modules, same parameter names) on the shared skip mechanism.

A ViT has no stages, so its encoder layers are grouped into 4 stages of equal size (ViT-B/16: 4 x 3); the
last ``floor(n/2)`` layers of each group are skippable (ViT-B/16: the last one). The layers stay at
``encoder.layers.encoder_layer_<i>``; ``ln_1``/``ln_2`` of mandatory layers are skip-aware (the published
checkpoints call the twins ``ln_1_skip``/``ln_2_skip``). torchvision's ImageNet state dict loads into the
super-net path.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.models import vision_transformer as tv

from ..core.network import AdaptiveDepthNet
from .registry import flops_table, register_model


class VisionTransformer(AdaptiveDepthNet, tv.VisionTransformer):
    """torchvision's VisionTransformer with its encoder layers grouped into ``num_stages`` skippable stages
    (forward: torchvision's).

    Takes torchvision's arguments (``image_size``, ``patch_size``, ``num_layers``, ``num_heads``,
    ``hidden_dim``, ``mlp_dim``, ``dropout``, ``num_classes`` ...); ``num_layers`` must be a multiple of
    ``num_stages`` with at least 2 layers per stage.
    """

    #: stage outputs are (N, tokens, C): feature distillation takes the token mean (class token included)
    feature_channel_dim = -1

    def __init__(self, num_layers: int, num_stages: int = 4, **kwargs: Any) -> None:
        if num_layers % num_stages or num_layers < 2 * num_stages:
            raise ValueError(
                f"num_layers={num_layers} cannot form {num_stages} stages of >= 2 layers; "
                f"use a multiple of {num_stages} that is at least {2 * num_stages}"
            )
        super().__init__(num_layers=num_layers, **kwargs)
        layers, per_stage = list(self.encoder.layers), num_layers // num_stages
        self.set_stages([layers[i : i + per_stage] for i in range(0, num_layers, per_stage)])

    def forward_features_plain(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's tokens (N, 1 + patches, C), class token first, as torchvision's forward computes them."""
        x = self._process_input(x)
        return self.encoder(torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1))

    def forward_head_plain(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0]
        return x if pre_logits else self.heads(x)


@register_model(
    input_size=224,
    classifier="heads.head",
    published={
        "FFFF": (17.58, 81.4),
        "FFFT": (16.20, 81.2),
        "TTFF": (14.67, 80.9),
        "TTFT": (13.21, 80.7),
        "TTTT": (11.76, 80.6),
    },
    flops_tolerance=0.02,
    # ViT-B/16's layout (12 layers, 4 stages of 3) at a tiny width and image size
    test_kwargs={"num_classes": 10, "image_size": 32, "hidden_dim": 48, "mlp_dim": 96, "num_heads": 2},
)
def vit_b_16(num_classes: int = 1000, image_size: int = 224, **kwargs: Any) -> VisionTransformer:
    """ViT-B/16-ADN: 12 encoder layers as 4 stages of 3, the last layer of each skippable."""
    config: dict[str, Any] = dict(patch_size=16, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072)
    config.update(kwargs)
    return VisionTransformer(image_size=image_size, num_classes=num_classes, **config)


# GMACs of every sub-network at 224 px, counted by adn.count_flops (no published figures: accuracy None)
VIT_B_32_GMACS = (
    "FFFF 4.41 FFFT 4.05 FFTF 4.05 FFTT 3.69 FTFF 4.05 FTFT 3.69 FTTF 3.69 FTTT 3.34 "
    "TFFF 4.05 TFFT 3.69 TFTF 3.69 TFTT 3.34 TTFF 3.69 TTFT 3.34 TTTF 3.34 TTTT 2.98"
)


@register_model(
    input_size=224,
    classifier="heads.head",
    published=flops_table(VIT_B_32_GMACS),
    published_by="adn",
    test_kwargs={"num_classes": 10, "image_size": 64, "hidden_dim": 48, "mlp_dim": 96, "num_heads": 2},
)
def vit_b_32(num_classes: int = 1000, image_size: int = 224, **kwargs: Any) -> VisionTransformer:
    """ViT-B/32-ADN: ViT-B/16-ADN's 4 stages of 3 encoder layers on 32x32 patches."""
    config: dict[str, Any] = dict(patch_size=32, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072)
    config.update(kwargs)
    return VisionTransformer(image_size=image_size, num_classes=num_classes, **config)


@register_model(input_size=32, classifier="heads.head", test_kwargs={"num_classes": 10})
def vit_cifar(num_classes: int = 1000, image_size: int = 32, **kwargs: Any) -> VisionTransformer:
    """CIFAR-style ViT-ADN (32x32 input, patch 4, hidden 96): 8 layers as 4 stages of 2, CPU-friendly."""
    config: dict[str, Any] = dict(patch_size=4, num_layers=8, num_heads=4, hidden_dim=96, mlp_dim=384)
    config.update(kwargs)
    return VisionTransformer(image_size=image_size, num_classes=num_classes, **config)
