"""Train and eval transform presets (torchvision transforms v2) and the normalisation constants they use.

Three presets: ``imagenet`` (torchvision's reference recipe: RandomResizedCrop + flip for training, Resize +
CenterCrop for evaluation) and two for the small built-in grey-scale datasets, ``digits`` and ``fashion-mnist``
(resize to a square, shift by a padded random crop; Fashion-MNIST also flips, a mirrored garment being the same
garment).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision.transforms import v2 as T

__all__ = [
    "AUTO_AUGMENT_POLICIES",
    "DIGITS_MEAN",
    "DIGITS_STD",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INTERPOLATIONS",
    "PRESETS",
    "eval_transform",
    "train_transform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: mean/std of the built-in digits' train split (pixels scaled to 0..1); the three channels are identical.
#: Fixed constants like torchvision's ImageNet ones; tests check they match the data.
DIGITS_MEAN = (0.3055,) * 3
DIGITS_STD = (0.3759,) * 3
#: mean/std of Fashion-MNIST's 60,000 train images (pixels scaled to 0..1), on 3 identical channels.
FASHION_MNIST_MEAN = (0.2860,) * 3
FASHION_MNIST_STD = (0.3530,) * 3

#: preset name -> (mean, std) it normalises with
PRESETS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "digits": (DIGITS_MEAN, DIGITS_STD),
    "fashion-mnist": (FASHION_MNIST_MEAN, FASHION_MNIST_STD),
}
#: presets whose training crop may be mirrored (a mirrored digit may be another digit)
_FLIPS = {"imagenet", "fashion-mnist"}

INTERPOLATIONS = {
    "nearest": T.InterpolationMode.NEAREST,
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
}
AUTO_AUGMENT_POLICIES = ("ra", "ta_wide", "augmix", "imagenet")


def _interpolation(name: str) -> T.InterpolationMode:
    try:
        return INTERPOLATIONS[name]
    except KeyError:
        raise ValueError(f"unknown interpolation {name!r}; choose one of: {', '.join(INTERPOLATIONS)}") from None


def _preset(preset: str | None, digits: bool) -> str:
    name = preset or ("digits" if digits else "imagenet")
    if name not in PRESETS:
        raise ValueError(f"unknown transform preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return name


def _auto_augment(policy: str, interpolation: T.InterpolationMode, ra_magnitude: int, augmix_severity: int):
    if policy == "ra":
        return T.RandAugment(interpolation=interpolation, magnitude=ra_magnitude)
    if policy == "ta_wide":
        return T.TrivialAugmentWide(interpolation=interpolation)
    if policy == "augmix":
        return T.AugMix(interpolation=interpolation, severity=augmix_severity)
    if policy == "imagenet":
        return T.AutoAugment(T.AutoAugmentPolicy.IMAGENET, interpolation=interpolation)
    raise ValueError(f"unknown --auto-augment policy {policy!r}; choose one of: {', '.join(AUTO_AUGMENT_POLICIES)}")


def _finish(mean: Sequence[float], std: Sequence[float], random_erase: float = 0.0) -> list[Any]:
    """uint8 image (PIL or tensor) -> normalised float tensor; random erasing works on the normalised tensor."""
    steps: list[Any] = [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)]
    if random_erase > 0:
        steps.append(T.RandomErasing(p=random_erase))
    steps.append(T.ToPureTensor())
    return steps


def train_transform(
    crop_size: int,
    *,
    interpolation: str = "bilinear",
    auto_augment: str | None = None,
    ra_magnitude: int = 9,
    augmix_severity: int = 3,
    random_erase: float = 0.0,
    digits: bool = False,
    resize_size: int | None = None,
    preset: str | None = None,
) -> T.Compose:
    """Training preset (``preset``: one of :data:`PRESETS`; ``digits=True`` is ``preset="digits"``).

    ``imagenet``: RandomResizedCrop + horizontal flip (torchvision reference). ``digits`` and ``fashion-mnist``:
    resize to a ``resize_size`` square, then a random crop with zero padding (a shift of up to 1/8 of the size);
    no aggressive crop, and a flip for Fashion-MNIST only (a mirrored digit may be another digit).
    """
    name = _preset(preset, digits)
    mode = _interpolation(interpolation)
    if name == "imagenet":
        steps: list[Any] = [T.RandomResizedCrop(crop_size, interpolation=mode, antialias=True)]
    else:
        size = resize_size or crop_size
        steps = [
            T.Resize((size, size), interpolation=mode, antialias=True),
            T.RandomCrop(crop_size, padding=max(1, crop_size // 8)),
        ]
    if name in _FLIPS:
        steps.append(T.RandomHorizontalFlip())
    if auto_augment:
        steps.append(_auto_augment(auto_augment, mode, ra_magnitude, augmix_severity))
    return T.Compose(steps + _finish(*PRESETS[name], random_erase))


def eval_transform(
    crop_size: int,
    resize_size: int,
    *,
    interpolation: str = "bilinear",
    digits: bool = False,
    preset: str | None = None,
) -> T.Compose:
    """Evaluation preset: Resize(resize_size) + CenterCrop(crop_size); the small grey-scale datasets are resized
    as a square."""
    name = _preset(preset, digits)
    mode = _interpolation(interpolation)
    resize = resize_size if name == "imagenet" else (resize_size, resize_size)
    steps = [T.Resize(resize, interpolation=mode, antialias=True), T.CenterCrop(crop_size)]
    return T.Compose(steps + _finish(*PRESETS[name]))
