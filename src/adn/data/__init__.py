"""Datasets, transforms, samplers and mixup/cutmix for training and evaluation.

Sources of images:

* ``data_path=None`` — a **built-in** dataset: ``dataset="digits"`` (default), the 1,797 8x8 handwritten digits
  that scikit-learn ships inside its package (no download), split 80/20 (stratified, fixed seed) into train/val;
  or ``dataset="fashion-mnist"``, Fashion-MNIST's 60,000/10,000 train/test split, read from Debian's
  ``dataset-fashion-mnist`` package or a folder you name (or fetched with ``download=True``). Both are served as
  3-channel uint8 images resized to ``image_size``, so the same torchvision transforms-v2 pipelines apply as for
  ImageNet.
* ``data_path=DIR`` — ``DIR/train`` and ``DIR/val`` ImageFolder trees (ILSVRC-2012 layout) with the
  torchvision reference presets (RandomResizedCrop + flip + optional auto-augment / random erasing for
  training, Resize + CenterCrop for evaluation).

One module per job: :mod:`~adn.data.presets` (transforms and normalisation constants),
:mod:`~adn.data.digits` and :mod:`~adn.data.fashion_mnist` (built-in datasets), :mod:`~adn.data.folder`
(ImageFolder trees, unreadable images), :mod:`~adn.data.sampler` (samplers), :mod:`~adn.data.seeding`
(per-sample RNG seeding), :mod:`~adn.data.mixup` (mixup/cutmix collate), :mod:`~adn.data.loaders`
(:func:`build_datasets`, :func:`build_eval_loader`), :mod:`~adn.data.build`
(a run's loaders from its :class:`~adn.training.config.DataConfig`: :func:`build_data`, :func:`eval_loader`,
:func:`calibration_loader`). Everything public is importable from ``adn.data``.
"""

from .build import TrainData, build_data, calibration_loader, eval_loader
from .digits import BUILTIN_NAME, DigitsDataset
from .fashion_mnist import FASHION_MNIST_NAME, FashionMNISTDataset, find_fashion_mnist, read_idx
from .folder import BAD_IMAGE_POLICIES, BadImageError, load_image
from .loaders import BUILTIN_DATASETS, build_calibration_set, build_datasets, build_eval_loader
from .mixup import MixupCutmixCollate, mixup_cutmix_collate
from .presets import (
    AUTO_AUGMENT_POLICIES,
    DIGITS_MEAN,
    DIGITS_STD,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INTERPOLATIONS,
    PRESETS,
    eval_transform,
    train_transform,
)
from .sampler import RASampler, ResumableSampler, SeededRandomSampler, build_samplers
from .seeding import SeededDataset, SeededSample, batch_seed, sample_seed, seeded_rng

__all__ = [
    "AUTO_AUGMENT_POLICIES",
    "BAD_IMAGE_POLICIES",
    "BUILTIN_DATASETS",
    "BUILTIN_NAME",
    "BadImageError",
    "DIGITS_MEAN",
    "DIGITS_STD",
    "DigitsDataset",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_NAME",
    "FASHION_MNIST_STD",
    "FashionMNISTDataset",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INTERPOLATIONS",
    "MixupCutmixCollate",
    "PRESETS",
    "RASampler",
    "ResumableSampler",
    "SeededDataset",
    "SeededRandomSampler",
    "SeededSample",
    "TrainData",
    "batch_seed",
    "build_data",
    "calibration_loader",
    "build_calibration_set",
    "build_datasets",
    "build_eval_loader",
    "build_samplers",
    "eval_loader",
    "eval_transform",
    "find_fashion_mnist",
    "load_image",
    "mixup_cutmix_collate",
    "read_idx",
    "sample_seed",
    "seeded_rng",
    "train_transform",
]
