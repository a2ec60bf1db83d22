"""The loaders of a run, built from a :class:`adn.DataConfig`: training and validation (seeded per sample,
resumable, distributed), validation alone (``adn eval``), and the training images BatchNorm calibration reads."""

from __future__ import annotations

import sys
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Subset

from ..runtime.distributed import DistState, is_main_process
from ..runtime.interrupt import ignore_stop_signals
from .config import DataConfig
from .loaders import BUILTIN_DATASETS, build_calibration_set, build_datasets, build_eval_loader
from .mixup import mixup_cutmix_collate
from .sampler import ResumableSampler, build_samplers
from .seeding import SeededDataset

SINGLE = DistState()  # one process


class TrainData(NamedTuple):
    train_loader: DataLoader
    val_loader: DataLoader
    train_sampler: ResumableSampler
    classes: list[str]


def _subset(dataset, n: int | None):
    return dataset if n is None or n >= len(dataset) else Subset(dataset, range(n))


def _classes(dataset) -> list[str]:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return list(getattr(dataset, "classes", []))


def _warn(message: str) -> None:
    if is_main_process():
        print(f"adn: warning: {message}", file=sys.stderr, flush=True)


def _transforms(cfg: DataConfig) -> dict:
    """The evaluation-transform keywords every builder takes."""
    return dict(
        val_resize_size=cfg.val_resize_size,
        val_crop_size=cfg.val_crop_size,
        interpolation=cfg.interpolation,
        bad_images=cfg.bad_images,
        **cfg.builtin_kwargs(),
    )


def build_data(
    cfg: DataConfig, image_size: int, device: torch.device, seed: int, dist: DistState = SINGLE, model: str = ""
) -> TrainData:
    """Train and val loaders (seeded per sample, resumable), the train sampler and the class names;
    ``image_size``: the model's input size (crops default to it)."""
    train_set, val_set, num_classes = build_datasets(
        cfg.data_path,
        image_size=image_size,
        train_crop_size=cfg.train_crop_size,
        auto_augment=cfg.auto_augment,
        ra_magnitude=cfg.ra_magnitude,
        augmix_severity=cfg.augmix_severity,
        random_erase=cfg.random_erase,
        **_transforms(cfg),
    )
    classes = _classes(train_set) or [str(i) for i in range(num_classes)]
    photo_size = _first_image_size(train_set) if cfg.data_path is not None else None
    train_set, val_set = _subset(train_set, cfg.train_subset), _subset(val_set, cfg.val_subset)
    train_sampler, val_sampler = build_samplers(
        train_set, val_set, distributed=dist.distributed, ra_sampler=cfg.ra_sampler, ra_reps=cfg.ra_reps, seed=seed
    )
    # each sample's augmentation is seeded by its (seed, epoch, rank, position): reproducible after any restart
    train_sampler = ResumableSampler(train_sampler, seed=seed, rank=dist.rank)
    train_loader = DataLoader(
        SeededDataset(train_set),
        batch_size=cfg.batch_size,
        sampler=train_sampler,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        collate_fn=mixup_cutmix_collate(num_classes, cfg.mixup_alpha, cfg.cutmix_alpha),
        drop_last=len(train_set) >= 2 * cfg.batch_size,
        persistent_workers=cfg.workers > 0,
        worker_init_fn=ignore_stop_signals,
        # its own generator: iter(loader) would otherwise draw from the global RNG, one draw off after a resume
        generator=torch.Generator().manual_seed(seed),
    )
    val_loader = DataLoader(
        val_set,
        batch_size=cfg.batch_size,
        sampler=val_sampler,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.workers > 0,
    )
    _report(cfg, len(train_set), len(val_set), num_classes, photo_size, image_size, dist, model)
    return TrainData(train_loader, val_loader, train_sampler, classes)


def _report(cfg: DataConfig, n_train, n_val, num_classes, photo_size, image_size, dist: DistState, model) -> None:
    source = cfg.data_path or BUILTIN_DATASETS[cfg.dataset]
    if is_main_process():
        print(f"data: {source}: {n_train} train / {n_val} val images, {num_classes} classes", flush=True)
    if photo_size is not None and min(photo_size) > 2 * image_size and cfg.train_crop_size is None:
        _warn(
            f"{model} takes {image_size}x{image_size} px images: your photos are shrunk to that; for full-size "
            "images use e.g. --model resnet50 (224 px), or set --train-crop-size/--val-crop-size"
        )
    if dist.distributed and n_val % dist.world_size:
        # DistributedSampler pads every process to the same number of images (as torchvision's reference does)
        _warn(
            f"{n_val} val images do not split evenly over {dist.world_size} processes: the per-epoch "
            f"accuracies count {-n_val % dist.world_size} of them twice; `adn eval` on one process gives "
            "exact numbers"
        )


def _first_image_size(dataset) -> tuple[int, int] | None:
    """(width, height) of the dataset's first image, read from its header only; None when unknown or unreadable."""
    samples = getattr(dataset, "samples", None)
    if not samples:
        return None
    from PIL import Image

    try:
        with Image.open(samples[0][0]) as image:
            return image.size
    except Exception:  # an unreadable image is reported by the loader, with its fix
        return None


def calibration_loader(cfg: DataConfig, image_size: int, images: int, seed: int = 0) -> DataLoader:
    """Training images with the evaluation transform (no augmentation), ``images`` of them spread over the
    whole training set (its first ``cfg.train_subset``), for BatchNorm calibration."""
    dataset = _subset(build_calibration_set(cfg.data_path, image_size=image_size, **_transforms(cfg)), cfg.train_subset)
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:images].tolist()
    return DataLoader(Subset(dataset, sorted(chosen)), batch_size=cfg.batch_size, num_workers=cfg.workers)


def eval_loader(cfg: DataConfig, image_size: int, distributed: bool = False) -> tuple[DataLoader, int]:
    """The validation loader (``val_subset``, a distributed sampler in a distributed run) and the class count."""
    loader, num_classes = build_eval_loader(
        cfg.data_path, image_size=image_size, batch_size=cfg.batch_size, workers=cfg.workers, **_transforms(cfg)
    )
    if cfg.val_subset is not None or distributed:
        dataset = _subset(loader.dataset, cfg.val_subset)
        sampler = torch.utils.data.distributed.DistributedSampler(dataset, shuffle=False) if distributed else None
        loader = DataLoader(
            dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers, pin_memory=loader.pin_memory
        )
    return loader, num_classes


__all__ = ["TrainData", "build_data", "calibration_loader", "eval_loader"]
