"""Swin-ADN: torchvision's Swin Transformer (same modules, same parameter names) on the shared skip mechanism.

torchvision keeps the four stages and the patch-merging layers between them in one ``features`` sequence
(``features.1`` = stage 1, ``features.2`` = its patch merging, ...). As in the reference implementation:
``norm1``/``norm2`` of mandatory blocks have twins, each patch-merging layer's norm has a twin driven by the
flag of the stage that follows it, and the mandatory blocks of a skipped stage run without stochastic depth
(the base-net never drops paths; the super-net does). The default stochastic-depth probability of ``swin_t``
is the reference's 0.1. torchvision's ImageNet state dict loads into the super-net path, and the reference's
checkpoints (patch embedding ``pre.*``, ``features`` indices shifted by one) load too. ``swin_v2_t`` is
torchvision's Swin-V2 (cosine attention, log-spaced position bias, post-norm blocks, ``PatchMergingV2``) on the
same split and twin rules; the reference's keys are laid out like its Swin-T's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torchvision.models import swin_transformer as tv
from torchvision.ops import StochasticDepth

from ..core.network import AdaptiveDepthNet
from .registry import flops_table, register_model


class SwinTransformer(AdaptiveDepthNet, tv.SwinTransformer):
    """torchvision's SwinTransformer whose stages have skippable second halves (forward: torchvision's).

    Takes torchvision's arguments (``patch_size``, ``embed_dim``, ``depths``, ``num_heads``, ``window_size``,
    ``stochastic_depth_prob``, ``dropout``, ``num_classes`` ...); every depth must be at least 2.
    """

    #: stage outputs are (N, H, W, C) maps: feature distillation pools them over H and W (adn.core.features)
    feature_channel_dim = -1

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # features = [patch embedding, stage 1, merging, stage 2, merging, stage 3, merging, stage 4]
        stages = [list(stage) for stage in self.features[1::2]]
        merges = {i: [merge] for i, merge in enumerate(self.features[2::2], start=1)}  # before stage i
        self.set_stages(stages, stage_twins=merges, skipped_inactive=(StochasticDepth,))

    def forward_features_plain(self, x: torch.Tensor) -> torch.Tensor:
        return self.permute(self.norm(self.features(x)))  # (N, C, H, W), as torchvision's forward pools it

    def forward_head_plain(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.flatten(self.avgpool(x))
        return x if pre_logits else self.head(x)

    def from_reference(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The reference implementation's names -> ours: ``pre.*`` -> ``features.0.*``, ``features.<k>`` ->
        ``features.<k+1>``."""
        if "pre.0.weight" not in state_dict:
            return dict(state_dict)
        out = {}
        for key, value in state_dict.items():
            key = (
                re.sub(r"^pre\.", "features.0.", key)
                if key.startswith("pre.")
                else re.sub(r"^features\.(\d+)\.", lambda m: f"features.{int(m[1]) + 1}.", key)
            )
            out[key] = value
        return out


@register_model(
    input_size=224,
    classifier="head",
    published={"FFFF": (4.49, 81.6), "TFFF": (4.11, 80.8), "TTFF": (3.75, 80.0), "TTTT": (2.34, 78.0)},
    flops_tolerance=0.02,
    test_kwargs={"num_classes": 10},
)
def swin_t(num_classes: int = 1000, stochastic_depth_prob: float = 0.1, **kwargs: Any) -> SwinTransformer:
    """Swin-T-ADN: depths [2, 2, 6, 2], skippable [1, 1, 3, 1]; window 7, patch 4, embed dim 96."""
    config: dict[str, Any] = dict(
        patch_size=[4, 4], embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=[7, 7]
    )
    config.update(kwargs)
    return SwinTransformer(num_classes=num_classes, stochastic_depth_prob=stochastic_depth_prob, **config)


# GMACs of every sub-network at 224 px, counted by adn.count_flops (no published figures: accuracy None)
SWIN_V2_T_GMACS = (
    "FFFF 4.94 FFFT 4.55 FFTF 3.75 FFTT 3.36 FTFF 4.53 FTFT 4.14 FTTF 3.34 FTTT 2.95 "
    "TFFF 4.55 TFFT 4.16 TFTF 3.36 TFTT 2.97 TTFF 4.14 TTFT 3.75 TTTF 2.96 TTTT 2.56"
)


@register_model(
    input_size=224,
    classifier="head",
    published=flops_table(SWIN_V2_T_GMACS),
    published_by="adn",
    test_kwargs={"num_classes": 10, "embed_dim": 16, "num_heads": [1, 2, 4, 8], "window_size": [4, 4]},
)
def swin_v2_t(num_classes: int = 1000, stochastic_depth_prob: float = 0.1, **kwargs: Any) -> SwinTransformer:
    """Swin-V2-T-ADN: depths [2, 2, 6, 2], skippable [1, 1, 3, 1]; window 8, patch 4, embed dim 96.

    Stochastic depth 0.1 as the family's reference Swin-T (torchvision's own default is 0.2)."""
    config: dict[str, Any] = dict(
        patch_size=[4, 4],
        embed_dim=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=[8, 8],
        block=tv.SwinTransformerBlockV2,
        downsample_layer=tv.PatchMergingV2,
    )
    config.update(kwargs)
    return SwinTransformer(num_classes=num_classes, stochastic_depth_prob=stochastic_depth_prob, **config)


@register_model(input_size=32, classifier="head", test_kwargs={"num_classes": 10})
def swin_cifar(num_classes: int = 1000, stochastic_depth_prob: float = 0.1, **kwargs: Any) -> SwinTransformer:
    """CIFAR-style Swin-ADN (32x32 input, patch 2, window 4, embed dim 32): depths [2, 2, 2, 2], CPU-friendly."""
    config: dict[str, Any] = dict(
        patch_size=[2, 2], embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=[4, 4]
    )
    config.update(kwargs)
    return SwinTransformer(num_classes=num_classes, stochastic_depth_prob=stochastic_depth_prob, **config)
