"""MixUp / CutMix as the train DataLoader's ``collate_fn`` (torchvision transforms v2, as in the reference)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import default_collate
from torchvision.transforms import v2 as T

from .seeding import batch_seed, seeded_rng

__all__ = ["MixupCutmixCollate", "mixup_cutmix_collate"]


class MixupCutmixCollate:
    """``collate_fn``: default-collate a batch, then apply MixUp or CutMix (one picked per batch when both are
    on). Targets become soft, shape ``(N, num_classes)``. A class (not a closure) so it pickles for workers.

    When every sample carries its seed (:class:`~adn.data.SeededSample`, from :class:`~adn.data.SeededDataset`),
    the batch's random choices (which mix, lambda, box) are drawn under :func:`~adn.data.seeded_rng` from the
    hash of those seeds: a function of the batch's keys, leaving the global RNG state as it was. Plain samples
    draw from the global RNG, like any transform.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> None:
        mixes = []
        if mixup_alpha > 0:
            mixes.append(T.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if cutmix_alpha > 0:
            mixes.append(T.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        if not mixes:
            raise ValueError("MixupCutmixCollate needs mixup_alpha > 0 or cutmix_alpha > 0")
        self.mix = mixes[0] if len(mixes) == 1 else T.RandomChoice(mixes)

    def __call__(self, batch: list[tuple[Any, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        seeds = [getattr(sample, "seed", None) for sample in batch]
        images, targets = default_collate(batch)
        if not seeds or None in seeds:
            return self.mix(images, targets)
        with seeded_rng(batch_seed(seeds)):
            return self.mix(images, targets)


def mixup_cutmix_collate(num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> Callable | None:
    """A mixup/cutmix ``collate_fn`` for the train DataLoader, or None when both alphas are 0."""
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(f"--mixup-alpha and --cutmix-alpha must be >= 0, got {mixup_alpha}, {cutmix_alpha}")
    if mixup_alpha == 0 and cutmix_alpha == 0:
        return None
    return MixupCutmixCollate(num_classes, mixup_alpha, cutmix_alpha)
