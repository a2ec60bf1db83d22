"""What the data of a run is: :class:`DataConfig` (where the images come from, how they are batched and
transformed), validated where it is made. Part of a :class:`adn.TrainConfig`; the data layer's builders take it."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from .folder import BAD_IMAGE_POLICIES
from .presets import AUTO_AUGMENT_POLICIES, INTERPOLATIONS

DATASETS = ("digits", "fashion-mnist")


def _one_of(section: object, name: str, allowed: Collection[str]) -> None:
    value = getattr(section, name)
    if value is not None and value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of: {', '.join(allowed)}")


def _at_least(section: object, low: float, *names: str, above: bool = False) -> None:
    """Each of ``names`` is None or ``>= low`` (``> low`` with ``above``): a wrong value is a ValueError line."""
    for name in names:
        value = getattr(section, name)
        if value is not None and (value <= low if above else value < low):
            raise ValueError(f"{name}={value!r} must be {'>' if above else '>='} {low}")


def _at_most(section: object, high: float, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        if value is not None and value > high:
            raise ValueError(f"{name}={value!r} must be <= {high}")


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from, how they are batched and transformed (augmentation included)."""

    data_path: str | None = None
    dataset: str = "digits"
    download: bool = False
    batch_size: int | None = None
    workers: int | None = None
    interpolation: str = "bilinear"
    train_crop_size: int | None = None
    val_resize_size: int | None = None
    val_crop_size: int | None = None
    train_subset: int | None = None
    val_subset: int | None = None
    bad_images: str = "stop"
    auto_augment: str | None = None
    ra_magnitude: int = 9
    augmix_severity: int = 3
    random_erase: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    ra_sampler: bool = False
    ra_reps: int = 3

    def __post_init__(self) -> None:
        _one_of(self, "dataset", DATASETS)
        _one_of(self, "interpolation", INTERPOLATIONS)
        _one_of(self, "bad_images", BAD_IMAGE_POLICIES)
        _one_of(self, "auto_augment", AUTO_AUGMENT_POLICIES)
        _at_least(self, 1, "batch_size", "train_subset", "val_subset", "ra_reps")
        _at_least(self, 0, "workers", "random_erase", "mixup_alpha", "cutmix_alpha")
        _at_most(self, 1, "random_erase")

    def builtin_kwargs(self) -> dict[str, Any]:
        """The built-in dataset's choice, for the data builders (nothing for the default digits)."""
        return {"dataset": self.dataset, "download": self.download} if self.dataset != "digits" else {}


__all__ = ["DATASETS", "DataConfig"]
