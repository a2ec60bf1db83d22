"""ResNet-ADN: torchvision's ResNet (blocks, layout and parameter names) on the shared skip mechanism.

``resnet50``/``resnet101`` follow torchvision exactly, so torchvision's ImageNet state dict loads into the
super-net path. ``resnet50vd``/``resnet101vd`` are the reference's ResNet-D variants: a strided shortcut
average-pools (2x2, stride 2, ceil mode) before its stride-1 1x1 convolution, so its convolution and norm are
``downsample.1``/``downsample.2``; the stem is torchvision's. ``resnet20``/``resnet56`` are the CIFAR-style
ResNets (3x3 stem, 3 stages of 16/32/64 channels, 32x32 input) that train on a CPU in minutes.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from ..core.network import AdaptiveDepthNet
from .registry import flops_table, register_model

Block = type[BasicBlock | Bottleneck]


class ResNet(AdaptiveDepthNet):
    """A ResNet whose stages (``layer1``, ``layer2`` ...) have skippable second halves."""

    def __init__(
        self,
        block: Block,
        layers: list[int],
        widths: list[int],
        num_classes: int = 1000,
        small_input: bool = False,
        zero_init_residual: bool = False,
        avg_down: bool = False,
    ) -> None:
        super().__init__()
        self.avg_down = avg_down
        self.inplanes = widths[0]  # the stem's width: 64 in the ImageNet ResNets
        if small_input:  # CIFAR stem: one 3x3 conv, no max-pool
            self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.stage_names = names = []
        for i, (n, width) in enumerate(zip(layers, widths, strict=False)):
            names.append(f"layer{i + 1}")
            setattr(self, names[-1], self._make_layer(block, width, n, stride=1 if i == 0 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[-1] * block.expansion, num_classes)

        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                last_bn = m.bn3 if isinstance(m, Bottleneck) else m.bn2 if isinstance(m, BasicBlock) else None
                if last_bn is not None:
                    nn.init.constant_(last_bn.weight, 0)
        # After init, so each twin norm starts as a copy of its main norm. Shortcut norms are shared, as in the
        # published models.
        self.set_stages([list(getattr(self, name)) for name in names], shared_norms=("downsample",))

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        out = planes * block.expansion
        if stride != 1 and self.avg_down:  # ResNet-D: the 1x1 conv no longer drops 3 of every 4 positions
            downsample = nn.Sequential(
                nn.AvgPool2d(stride, stride, ceil_mode=True), conv1x1(self.inplanes, out), nn.BatchNorm2d(out)
            )
        elif stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(conv1x1(self.inplanes, out, stride), nn.BatchNorm2d(out))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features_plain(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def forward_head_plain(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    def forward_plain(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head_plain(self.forward_features_plain(x))


_TINY = {"num_classes": 10}
WIDTHS = [64, 128, 256, 512]  # stage widths of the ImageNet ResNets (x4 after a bottleneck)
_TINY_WIDE = {"num_classes": 10, "widths": [8, 16, 32, 64]}  # an ImageNet layout at 1/8 of the width
# GMACs of every sub-network at 224 px, counted by adn.count_flops (no published figures: accuracy None)
RESNET101_GMACS = (
    "FFFF 7.80 FFFT 7.58 FFTF 5.40 FFTT 5.18 FTFF 7.36 FTFT 7.15 FTTF 4.96 FTTT 4.74 "
    "TFFF 7.58 TFFT 7.36 TFTF 5.18 TFTT 4.96 TTFF 7.15 TTFT 6.93 TTTF 4.74 TTTT 4.53"
)
RESNET50VD_GMACS = (
    "FFFF 4.09 FFFT 3.87 FFTF 3.43 FFTT 3.22 FTFF 3.65 FTFT 3.43 FTTF 3.00 FTTT 2.78 "
    "TFFF 3.87 TFFT 3.65 TFTF 3.22 TFTT 3.00 TTFF 3.43 TTFT 3.22 TTTF 2.78 TTTT 2.56"
)
RESNET101VD_GMACS = (
    "FFFF 7.80 FFFT 7.58 FFTF 5.40 FFTT 5.18 FTFF 7.36 FTFT 7.15 FTTF 4.96 FTTT 4.74 "
    "TFFF 7.58 TFFT 7.36 TFTF 5.18 TFTT 4.96 TTFF 7.15 TTFT 6.93 TTTF 4.74 TTTT 4.53"
)


@register_model(
    input_size=224,
    published={"FFFF": (4.11, 77.6), "TFFF": (3.90, 77.1), "TTFF": (3.46, 76.5), "TTTT": (2.58, 76.1)},
    test_kwargs=_TINY,
)
def resnet50(num_classes: int = 1000, widths: list[int] = WIDTHS, **kwargs) -> ResNet:
    """ResNet-50-ADN: stages [3, 4, 6, 3], skippable [1, 2, 3, 1]."""
    return ResNet(Bottleneck, [3, 4, 6, 3], widths, num_classes, **kwargs)


@register_model(input_size=224, published=flops_table(RESNET101_GMACS), published_by="adn", test_kwargs=_TINY_WIDE)
def resnet101(num_classes: int = 1000, widths: list[int] = WIDTHS, **kwargs) -> ResNet:
    """ResNet-101-ADN: stages [3, 4, 23, 3], skippable [1, 2, 11, 1]."""
    return ResNet(Bottleneck, [3, 4, 23, 3], widths, num_classes, **kwargs)


@register_model(input_size=224, published=flops_table(RESNET50VD_GMACS), published_by="adn", test_kwargs=_TINY_WIDE)
def resnet50vd(num_classes: int = 1000, widths: list[int] = WIDTHS, **kwargs) -> ResNet:
    """ResNet-50-D-ADN: resnet50 with average-pooled strided shortcuts (the reference's ResNet-D)."""
    return ResNet(Bottleneck, [3, 4, 6, 3], widths, num_classes, avg_down=True, **kwargs)


@register_model(input_size=224, published=flops_table(RESNET101VD_GMACS), published_by="adn", test_kwargs=_TINY_WIDE)
def resnet101vd(num_classes: int = 1000, widths: list[int] = WIDTHS, **kwargs) -> ResNet:
    """ResNet-101-D-ADN: resnet101 with average-pooled strided shortcuts (the reference's ResNet-D)."""
    return ResNet(Bottleneck, [3, 4, 23, 3], widths, num_classes, avg_down=True, **kwargs)


@register_model(input_size=32, test_kwargs=_TINY)
def resnet20(num_classes: int = 1000, **kwargs) -> ResNet:
    """CIFAR-style ResNet-20-ADN (32x32 input): stages [3, 3, 3], skippable [1, 1, 1]."""
    return ResNet(BasicBlock, [3, 3, 3], [16, 32, 64], num_classes, small_input=True, **kwargs)


@register_model(input_size=32, test_kwargs=_TINY)
def resnet56(num_classes: int = 1000, **kwargs) -> ResNet:
    """CIFAR-style ResNet-56-ADN (32x32 input): stages [9, 9, 9], skippable [4, 4, 4]."""
    return ResNet(BasicBlock, [9, 9, 9], [16, 32, 64], num_classes, small_input=True, **kwargs)
