"""What the data of a run is: :class:`DataConfig` (where the images come from, how they are batched and
transformed), validated where it is made. Part of a :class:`adn.TrainConfig`; the data layer's builders take it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import at_least, at_most, one_of
from .folder import BAD_IMAGE_POLICIES
from .presets import AUTO_AUGMENT_POLICIES, INTERPOLATIONS

DATASETS = ("digits", "fashion-mnist")


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
        one_of(self, "dataset", DATASETS)
        one_of(self, "interpolation", INTERPOLATIONS)
        one_of(self, "bad_images", BAD_IMAGE_POLICIES)
        one_of(self, "auto_augment", AUTO_AUGMENT_POLICIES)
        at_least(self, 1, "batch_size", "train_subset", "val_subset", "ra_reps")
        at_least(self, 0, "workers", "random_erase", "mixup_alpha", "cutmix_alpha")
        at_most(self, 1, "random_erase")

    def builtin_kwargs(self) -> dict[str, Any]:
        """The built-in dataset's choice, for the data builders (nothing for the default digits)."""
        return {"dataset": self.dataset, "download": self.download} if self.dataset != "digits" else {}


__all__ = ["DATASETS", "DataConfig"]
