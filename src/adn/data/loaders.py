"""The two entry points: train/val datasets for ``adn train`` and the evaluation loader for ``adn eval`` and
``adn bench``, from a built-in dataset (``data_path=None``) or an ImageFolder tree."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from .digits import BUILTIN_NAME, DigitsDataset
from .fashion_mnist import FASHION_MNIST_NAME, FashionMNISTDataset
from .folder import _check_root, _check_same_classes, _class_names, _image_folder
from .presets import AUTO_AUGMENT_POLICIES, _interpolation, eval_transform, train_transform

__all__ = ["BUILTIN_DATASETS", "build_calibration_set", "build_datasets", "build_eval_loader"]

#: the built-in datasets (``data_path=None``): name -> the description training logs
BUILTIN_DATASETS = {"digits": BUILTIN_NAME, "fashion-mnist": FASHION_MNIST_NAME}


def _sizes(
    image_size: int, train_crop_size: int | None, val_resize_size: int | None, val_crop_size: int | None
) -> tuple[int, int, int]:
    """(train crop, val resize, val crop): torchvision's reference defaults 224/256/224 scaled to ``image_size``;
    each given size is used as is (like the reference, they do not scale each other)."""
    return (
        train_crop_size or image_size,
        val_resize_size or round(image_size * 256 / 224),
        val_crop_size or image_size,
    )


def _check_dataset(data_path: str | None, dataset: str) -> None:
    if dataset not in BUILTIN_DATASETS:
        raise ValueError(f"unknown built-in dataset {dataset!r}; choose one of: {', '.join(BUILTIN_DATASETS)}")
    if data_path is not None and dataset != "digits":
        raise ValueError(f"--data-path reads your own images; drop it to use the built-in {dataset} dataset")


def _builtin(dataset: str, split: str, transform: Callable, root: str | Path | None, download: bool) -> Dataset:
    if dataset == "digits":
        return DigitsDataset(split, transform)
    return FashionMNISTDataset(split, transform, root=root, download=download)


def _builtin_val(
    dataset: str,
    image_size: int,
    val_resize_size: int | None,
    val_crop_size: int | None,
    interpolation: str,
    root: str | Path | None,
    download: bool,
) -> Dataset:
    """Built-in val images, resized straight to the crop size (``val_resize_size`` only if given): they are
    already tightly cropped."""
    crop = val_crop_size or image_size
    transform = eval_transform(crop, val_resize_size or crop, interpolation=interpolation, preset=dataset)
    return _builtin(dataset, "val", transform, root, download)


def build_datasets(
    data_path: str | None = None,
    *,
    image_size: int,
    dataset: str = "digits",
    train_crop_size: int | None = None,
    val_resize_size: int | None = None,
    val_crop_size: int | None = None,
    interpolation: str = "bilinear",
    auto_augment: str | None = None,
    ra_magnitude: int = 9,
    augmix_severity: int = 3,
    random_erase: float = 0.0,
    bad_images: str = "stop",
    download: bool = False,
    root: str | Path | None = None,
) -> tuple[Dataset, Dataset, int]:
    """Return ``(train_set, val_set, num_classes)``.

    ``data_path=None``: the built-in ``dataset`` (one of :data:`BUILTIN_DATASETS`); Fashion-MNIST is looked up
    in ``root``, Debian's package and the default root, and fetched into ``root`` with ``download=True`` (see
    :mod:`adn.data.fashion_mnist`). ``data_path=DIR``: ``DIR/train`` and ``DIR/val`` ImageFolder trees.

    ``image_size`` is the model's input resolution; the crop/resize sizes default to it (ImageFolder: train crop
    ``image_size``, val resize ``image_size * 256/224``, val crop ``image_size`` — 224/256/224 for 224). For the
    built-in datasets the val images are resized straight to ``val_crop_size or image_size`` (``val_resize_size``
    only if given): they are already tightly cropped. ``bad_images``: see :data:`BAD_IMAGE_POLICIES`.
    """
    _check_dataset(data_path, dataset)
    if auto_augment is not None and auto_augment not in AUTO_AUGMENT_POLICIES:
        raise ValueError(
            f"unknown --auto-augment policy {auto_augment!r}; choose one of: {', '.join(AUTO_AUGMENT_POLICIES)}"
        )
    if not 0.0 <= random_erase <= 1.0:
        raise ValueError(f"--random-erase is a probability in [0, 1], got {random_erase}")
    _interpolation(interpolation)
    aug = dict(
        interpolation=interpolation,
        auto_augment=auto_augment,
        ra_magnitude=ra_magnitude,
        augmix_severity=augmix_severity,
        random_erase=random_erase,
    )
    if data_path is None:
        crop = train_crop_size or image_size
        train = _builtin(dataset, "train", train_transform(crop, preset=dataset, **aug), root, download)
        val = _builtin_val(dataset, image_size, val_resize_size, val_crop_size, interpolation, root, download)
        return train, val, len(train.classes)

    root_dir = _check_root(data_path, ("train", "val"))
    crop, resize, val_crop = _sizes(image_size, train_crop_size, val_resize_size, val_crop_size)
    classes = _class_names(root_dir / "train")
    _check_same_classes(classes, _class_names(root_dir / "val"), root_dir)
    train = _image_folder(root_dir / "train", train_transform(crop, **aug), bad_images)
    val = _image_folder(root_dir / "val", eval_transform(val_crop, resize, interpolation=interpolation), bad_images)
    return train, val, len(classes)


def build_eval_loader(
    data_path: str | None = None,
    *,
    image_size: int,
    dataset: str = "digits",
    batch_size: int = 64,
    workers: int = 0,
    val_resize_size: int | None = None,
    val_crop_size: int | None = None,
    interpolation: str = "bilinear",
    bad_images: str = "stop",
    download: bool = False,
    root: str | Path | None = None,
) -> tuple[DataLoader, int]:
    """Validation loader (sequential, no augmentation) and the class count, for ``adn eval``.

    ``data_path=None``: the built-in ``dataset``'s val split (only that split is read). With a ``data_path``
    only ``val/`` is required; when ``train/`` is there too its classes define the label order (as in
    training) and must match ``val/``.
    """
    _check_dataset(data_path, dataset)
    if data_path is None:
        _interpolation(interpolation)
        val = _builtin_val(dataset, image_size, val_resize_size, val_crop_size, interpolation, root, download)
        num_classes = len(val.classes)
    else:
        root_dir = _check_root(data_path, ("val",))
        classes = _class_names(root_dir / "val")
        if (root_dir / "train").is_dir():
            train_classes = _class_names(root_dir / "train")
            _check_same_classes(train_classes, classes, root_dir)
        _, resize, crop = _sizes(image_size, None, val_resize_size, val_crop_size)
        val = _image_folder(root_dir / "val", eval_transform(crop, resize, interpolation=interpolation), bad_images)
        num_classes = len(classes)
    loader = DataLoader(
        val, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=torch.cuda.is_available()
    )
    return loader, num_classes


def build_calibration_set(
    data_path: str | None = None,
    *,
    image_size: int,
    dataset: str = "digits",
    val_resize_size: int | None = None,
    val_crop_size: int | None = None,
    interpolation: str = "bilinear",
    bad_images: str = "stop",
    download: bool = False,
    root: str | Path | None = None,
) -> Dataset:
    """The training images with the *evaluation* transform (no augmentation): what BatchNorm calibration
    (:func:`adn.calibrate`) estimates each sub-network's statistics on."""
    _check_dataset(data_path, dataset)
    if data_path is None:
        crop = val_crop_size or image_size
        transform = eval_transform(crop, val_resize_size or crop, interpolation=interpolation, preset=dataset)
        return _builtin(dataset, "train", transform, root, download)
    root_dir = _check_root(data_path, ("train",))
    _, resize, crop = _sizes(image_size, None, val_resize_size, val_crop_size)
    return _image_folder(root_dir / "train", eval_transform(crop, resize, interpolation=interpolation), bad_images)
