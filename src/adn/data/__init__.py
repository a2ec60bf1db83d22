"""Datasets, transforms, samplers and mixup/cutmix for training and evaluation.

Two sources of images:

* ``data_path=None`` — the **built-in** dataset: the 1,797 8x8 handwritten digits that scikit-learn ships inside
  its package (no download), split 80/20 (stratified, fixed seed) into train/val and served as 3-channel uint8
  images resized to ``image_size``, so the same torchvision transforms-v2 pipelines apply as for ImageNet.
* ``data_path=DIR`` — ``DIR/train`` and ``DIR/val`` ImageFolder trees (ILSVRC-2012 layout) with the
  torchvision reference presets (RandomResizedCrop + flip + optional auto-augment / random erasing for
  training, Resize + CenterCrop for evaluation).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image, UnidentifiedImageError
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    default_collate,
)
from torchvision import tv_tensors
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import find_classes
from torchvision.transforms import v2 as T

__all__ = [
    "AUTO_AUGMENT_POLICIES",
    "BAD_IMAGE_POLICIES",
    "BUILTIN_NAME",
    "BadImageError",
    "DIGITS_MEAN",
    "DIGITS_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INTERPOLATIONS",
    "DigitsDataset",
    "MixupCutmixCollate",
    "RASampler",
    "ResumableSampler",
    "SeededDataset",
    "SeededRandomSampler",
    "build_datasets",
    "build_eval_loader",
    "build_samplers",
    "eval_transform",
    "load_image",
    "mixup_cutmix_collate",
    "sample_seed",
    "train_transform",
]

BUILTIN_NAME = (
    "UCI Optical Recognition of Handwritten Digits (8x8, 10 classes, 1,797 images; E. Alpaydin & C. Kaynak, "
    "1998) as bundled with scikit-learn (sklearn.datasets.load_digits; package BSD-3-Clause, data CC BY 4.0 "
    "per the UCI repository)"
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: mean/std of the built-in digits' train split (pixels scaled to 0..1); the three channels are identical.
#: Fixed constants like torchvision's ImageNet ones; tests check they match the data.
DIGITS_MEAN = (0.3055,) * 3
DIGITS_STD = (0.3759,) * 3

INTERPOLATIONS = {
    "nearest": T.InterpolationMode.NEAREST,
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
}
AUTO_AUGMENT_POLICIES = ("ra", "ta_wide", "augmix", "imagenet")
#: what to do with an image file that cannot be read: stop with its name, or skip it (warn, use the next image)
BAD_IMAGE_POLICIES = ("stop", "skip")

_DIGITS_VAL_FRACTION = 0.2
_DIGITS_SPLIT_SEED = 0


# ---------------------------------------------------------------------------------------------- transforms


def _interpolation(name: str) -> T.InterpolationMode:
    try:
        return INTERPOLATIONS[name]
    except KeyError:
        raise ValueError(f"unknown interpolation {name!r}; choose one of: {', '.join(INTERPOLATIONS)}") from None


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
) -> T.Compose:
    """Training preset. ImageNet-style: RandomResizedCrop + horizontal flip (torchvision reference).

    ``digits=True``: resize to ``resize_size`` then a random crop with zero padding (a shift of up to 1/8 of the
    size). No flip and no aggressive crop: a mirrored or half-cropped digit may be another digit.
    """
    mode = _interpolation(interpolation)
    if digits:
        size = resize_size or crop_size
        steps: list[Any] = [
            T.Resize((size, size), interpolation=mode, antialias=True),
            T.RandomCrop(crop_size, padding=max(1, crop_size // 8)),
        ]
        mean, std = DIGITS_MEAN, DIGITS_STD
    else:
        steps = [
            T.RandomResizedCrop(crop_size, interpolation=mode, antialias=True),
            T.RandomHorizontalFlip(),
        ]
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    if auto_augment:
        steps.append(_auto_augment(auto_augment, mode, ra_magnitude, augmix_severity))
    return T.Compose(steps + _finish(mean, std, random_erase))


def eval_transform(
    crop_size: int, resize_size: int, *, interpolation: str = "bilinear", digits: bool = False
) -> T.Compose:
    """Evaluation preset: Resize(resize_size) + CenterCrop(crop_size) (digits: resized as a square)."""
    mode = _interpolation(interpolation)
    resize = (resize_size, resize_size) if digits else resize_size
    mean, std = (DIGITS_MEAN, DIGITS_STD) if digits else (IMAGENET_MEAN, IMAGENET_STD)
    steps = [T.Resize(resize, interpolation=mode, antialias=True), T.CenterCrop(crop_size)]
    return T.Compose(steps + _finish(mean, std))


# ---------------------------------------------------------------------------------------- built-in digits


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (1797, 8, 8) scaled 0..16 -> 0..255, labels int64). Cached per process."""
    # ``import sklearn.datasets`` costs ~0.7 s (it pulls in scipy); the digits are one small CSV inside the
    # package, so read it directly and fall back to the public loader if the package layout ever changes.
    spec = importlib.util.find_spec("sklearn")
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if csv is not None and csv.is_file():
        table = np.loadtxt(csv, delimiter=",")
        pixels, labels = table[:, :-1], table[:, -1]
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        pixels, labels = bunch.data, bunch.target
    images = np.rint(pixels.reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)
    return images, labels.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _digits_split() -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split -> (train indices, val indices), independent of any global RNG."""
    _, labels = _digits_arrays()
    rng = np.random.default_rng(_DIGITS_SPLIT_SEED)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = round(len(idx) * _DIGITS_VAL_FRACTION)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


class DigitsDataset(Dataset):
    """One split of the built-in digits: items are ``(transform(image), label)``, image a 3x8x8 uint8
    ``tv_tensors.Image`` before the transform."""

    classes = [str(d) for d in range(10)]

    def __init__(self, split: str, transform: Callable | None = None) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', not {split!r}")
        images, labels = _digits_arrays()
        index = _digits_split()[0 if split == "train" else 1]
        # grey -> 3 identical channels so ImageNet-style models and colour transforms apply unchanged
        self.images = torch.from_numpy(images[index]).unsqueeze(1).expand(-1, 3, -1, -1)
        self.targets: list[int] = labels[index].tolist()
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image = tv_tensors.Image(self.images[i])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[i]

    def __repr__(self) -> str:
        return f"DigitsDataset(split={self.split!r}, size={len(self)}, classes=10)"


# --------------------------------------------------------------------------------------------- ImageFolder


class BadImageError(ValueError):
    """An image file that cannot be read or decoded. The message is one line naming the file and the fix."""

    def __init__(self, message: str) -> None:
        # a DataLoader worker re-raises as ``BadImageError(<worker traceback>)``: keep the original last line
        if "Original Traceback" in message:
            message = message.strip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(message)


def load_image(path: str) -> Image.Image:
    """Open one image as RGB; an unreadable, truncated or corrupt file raises :class:`BadImageError`."""
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")  # convert() decodes the whole image: truncation shows here
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        if isinstance(exc, UnidentifiedImageError):  # its own message repeats the path
            reason = "not an image file PIL can decode"
        else:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadImageError(
            f"cannot read image {path} ({reason}); fix or remove it, "
            "or pass --bad-images skip to skip unreadable images"
        ) from None


class _ImageFolder(ImageFolder):
    """ImageFolder that, with ``bad_images="skip"``, replaces an unreadable image by the next readable one (so
    batch shapes and step counts stay fixed) and reports each skipped file once, with a running count."""

    def __init__(self, root: str, transform: Callable, bad_images: str = "stop") -> None:
        if bad_images not in BAD_IMAGE_POLICIES:
            raise ValueError(f"--bad-images must be one of {', '.join(BAD_IMAGE_POLICIES)}, not {bad_images!r}")
        super().__init__(root, transform=transform, loader=load_image)
        self.bad_images = bad_images
        self.skipped: set[str] = set()  # per process (each DataLoader worker counts its own)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        if self.bad_images == "stop":
            return super().__getitem__(index)
        for offset in range(len(self)):
            i = (index + offset) % len(self)
            try:
                return super().__getitem__(i)
            except BadImageError as exc:
                path = self.samples[i][0]
                if path not in self.skipped:
                    self.skipped.add(path)
                    reason = str(exc).split(" (", 1)[-1].split("); ", 1)[0]
                    print(
                        f"adn: warning: skipping unreadable image {path} ({reason}); "
                        f"{len(self.skipped)} skipped so far in this process",
                        file=sys.stderr,
                        flush=True,
                    )
        raise BadImageError(f"no readable image in '{self.root}'; check the files or the --data-path")


def _check_root(data_path: str, splits: Sequence[str]) -> Path:
    root = Path(data_path).expanduser()
    if not root.exists():
        raise FileNotFoundError(
            f"data path '{root}' does not exist; check --data-path (or omit it to use the built-in dataset)"
        )
    if not root.is_dir():
        raise NotADirectoryError(f"data path '{root}' is not a directory")
    layout = f"expected {root}/train/<class>/<image> and {root}/val/<class>/<image> (ILSVRC-2012 layout)"
    for split in splits:
        if not (root / split).is_dir():
            raise FileNotFoundError(f"data path '{root}' has no {split}/ folder; {layout}")
    return root


def _class_names(folder: Path) -> list[str]:
    """Sorted class-folder names, as ImageFolder finds them."""
    try:
        return find_classes(str(folder))[0]
    except FileNotFoundError:
        raise ValueError(f"no class folders in '{folder}'; expected one sub-folder of images per class") from None


def _image_folder(folder: Path, transform: Callable, bad_images: str = "stop") -> ImageFolder:
    try:
        return _ImageFolder(str(folder), transform, bad_images)
    except FileNotFoundError as e:  # torchvision: "Found no valid file for the classes ... Supported extensions"
        raise ValueError(f"no images found in '{folder}': {e}") from None


def _check_same_classes(train: list[str], val: list[str], root: Path) -> None:
    if train != val:
        missing, extra = sorted(set(train) - set(val)), sorted(set(val) - set(train))
        parts = [
            f"missing in val/: {', '.join(missing[:5])}" if missing else "",
            f"not in train/: {', '.join(extra[:5])}" if extra else "",
        ]
        raise ValueError(
            f"class folders of '{root}/val' do not match '{root}/train' ({'; '.join(p for p in parts if p)})"
        )


# ------------------------------------------------------------------------------------------------ builders


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


def build_datasets(
    data_path: str | None,
    *,
    image_size: int,
    train_crop_size: int | None = None,
    val_resize_size: int | None = None,
    val_crop_size: int | None = None,
    interpolation: str = "bilinear",
    auto_augment: str | None = None,
    ra_magnitude: int = 9,
    augmix_severity: int = 3,
    random_erase: float = 0.0,
    bad_images: str = "stop",
) -> tuple[Dataset, Dataset, int]:
    """Return ``(train_set, val_set, num_classes)``.

    ``image_size`` is the model's input resolution; the crop/resize sizes default to it (ImageFolder: train crop
    ``image_size``, val resize ``image_size * 256/224``, val crop ``image_size`` — 224/256/224 for 224). For the
    built-in digits the val images are resized straight to ``val_crop_size or image_size`` (``val_resize_size``
    only if given): they are already tightly cropped. ``bad_images``: see :data:`BAD_IMAGE_POLICIES`.
    """
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
        val_crop = val_crop_size or image_size
        train = DigitsDataset("train", train_transform(crop, digits=True, **aug))
        val = DigitsDataset(
            "val", eval_transform(val_crop, val_resize_size or val_crop, interpolation=interpolation, digits=True)
        )
        return train, val, len(DigitsDataset.classes)

    root = _check_root(data_path, ("train", "val"))
    crop, resize, val_crop = _sizes(image_size, train_crop_size, val_resize_size, val_crop_size)
    classes = _class_names(root / "train")
    _check_same_classes(classes, _class_names(root / "val"), root)
    train = _image_folder(root / "train", train_transform(crop, **aug), bad_images)
    val = _image_folder(root / "val", eval_transform(val_crop, resize, interpolation=interpolation), bad_images)
    return train, val, len(classes)


def build_eval_loader(
    data_path: str | None,
    *,
    image_size: int,
    batch_size: int = 64,
    workers: int = 0,
    val_resize_size: int | None = None,
    val_crop_size: int | None = None,
    interpolation: str = "bilinear",
    bad_images: str = "stop",
) -> tuple[DataLoader, int]:
    """Validation loader (sequential, no augmentation) and the class count, for ``adn eval``.

    With a ``data_path`` only ``val/`` is required; when ``train/`` is there too its classes define the label
    order (as in training) and must match ``val/``.
    """
    if data_path is None:
        _, val, num_classes = build_datasets(
            None,
            image_size=image_size,
            val_resize_size=val_resize_size,
            val_crop_size=val_crop_size,
            interpolation=interpolation,
        )
    else:
        root = _check_root(data_path, ("val",))
        classes = _class_names(root / "val")
        if (root / "train").is_dir():
            train_classes = _class_names(root / "train")
            _check_same_classes(train_classes, classes, root)
        _, resize, crop = _sizes(image_size, None, val_resize_size, val_crop_size)
        val = _image_folder(root / "val", eval_transform(crop, resize, interpolation=interpolation), bad_images)
        num_classes = len(classes)
    loader = DataLoader(
        val, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=torch.cuda.is_available()
    )
    return loader, num_classes


# ------------------------------------------------------------------------------------------------ samplers


class SeededRandomSampler(RandomSampler):
    """RandomSampler whose order depends only on ``(seed, epoch)``: call ``set_epoch`` like a
    DistributedSampler, and a resumed run sees the same order as an uninterrupted one."""

    def __init__(self, data_source: Dataset, seed: int = 0) -> None:
        super().__init__(data_source, generator=torch.Generator().manual_seed(seed))
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        self.generator.manual_seed(self.seed + self.epoch)
        return super().__iter__()


class RASampler(Sampler[int]):
    """Repeated-augmentation sampler (Hoffer et al. 2020; DeiT): every selected image appears ``repetitions``
    times per epoch, the copies going to different replicas (so each copy is augmented differently).

    Each replica yields ``ceil(len(dataset) / num_replicas)`` indices per epoch — as many as a
    DistributedSampler, so an epoch has the usual number of steps and covers about ``1/repetitions`` of the
    images, each ``repetitions`` times. ``num_replicas``/``rank`` default to the process group's.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        repetitions: int = 3,
    ) -> None:
        if num_replicas is None or rank is None:
            if not (dist.is_available() and dist.is_initialized()):
                raise RuntimeError("RASampler needs num_replicas and rank without an initialised process group")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        if repetitions < 1:
            raise ValueError(f"--ra-reps must be >= 1, got {repetitions}")
        self.dataset = dataset
        self.num_replicas, self.rank = num_replicas, rank
        self.shuffle, self.seed, self.repetitions = shuffle, seed, repetitions
        self.epoch = 0
        n = len(dataset)
        self.num_samples = math.ceil(n * repetitions / num_replicas)  # per replica, before truncation
        self.total_size = self.num_samples * num_replicas
        self.num_selected = math.ceil(n / num_replicas)  # what each replica yields

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        # consecutive copies of an index are dealt to consecutive replicas by the strided slice below
        indices = order.repeat_interleave(self.repetitions).tolist()
        pad = self.total_size - len(indices)
        indices += (indices * math.ceil(pad / len(indices)))[:pad] if pad > 0 else []
        return iter(indices[self.rank : self.total_size : self.num_replicas][: self.num_selected])

    def __len__(self) -> int:
        return self.num_selected

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


def sample_seed(seed: int, epoch: int, rank: int, position: int) -> int:
    """The RNG seed of one sample: a hash of (run seed, epoch, process rank, position in the epoch's stream)."""
    return int(np.random.SeedSequence([seed, epoch, rank, position]).generate_state(1, np.uint64)[0])


class ResumableSampler(Sampler[tuple[int, int]]):
    """Wraps a training sampler to make an epoch reproducible piece by piece.

    Yields ``(index, seed)`` keys, ``seed`` = :func:`sample_seed` of the position in the epoch's stream, for
    :class:`SeededDataset`; ``skip(n)`` starts the current epoch at position ``n`` (resuming mid-epoch: the
    consumed samples are neither loaded nor augmented again). The order comes from the wrapped sampler, which
    depends only on (seed, epoch) for every sampler :func:`build_samplers` makes.
    """

    def __init__(self, sampler: Sampler, seed: int = 0, rank: int = 0) -> None:
        self.sampler, self.seed, self.rank = sampler, seed, rank
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its beginning (call ``skip`` afterwards to start later)."""
        self.epoch, self.start = epoch, 0
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def skip(self, n: int) -> None:
        self.start = n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for position, index in enumerate(self.sampler):
            if position >= self.start:
                yield index, sample_seed(self.seed, self.epoch, self.rank, position)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.start)


class SeededDataset(Dataset):
    """Dataset indexed by :class:`ResumableSampler` keys: seeds the process's torch (CPU) and ``random`` RNGs
    from the key before loading the sample, so a sample's augmentation — and a mixup/cutmix collate that runs
    right after its batch is loaded — is a function of (seed, epoch, rank, position), whichever process or
    DataLoader worker loads it, and whether or not the run was interrupted before."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        torch.default_generator.manual_seed(seed)  # CPU generator only: CUDA streams are not touched
        random.seed(seed)
        return self.dataset[index]


def build_samplers(
    train_set: Dataset,
    val_set: Dataset,
    *,
    distributed: bool,
    ra_sampler: bool = False,
    ra_reps: int = 3,
    seed: int = 0,
) -> tuple[Sampler, Sampler]:
    """Train and val samplers. Every train sampler has ``set_epoch(epoch)``; call it before each epoch.

    Distributed: RASampler (``ra_sampler``) or DistributedSampler for training, DistributedSampler(shuffle=False)
    for validation. Single process: SeededRandomSampler (RASampler with one replica if ``ra_sampler``) and
    SequentialSampler.
    """
    if distributed:
        train: Sampler = (
            RASampler(train_set, shuffle=True, seed=seed, repetitions=ra_reps)
            if ra_sampler
            else DistributedSampler(train_set, shuffle=True, seed=seed)
        )
        return train, DistributedSampler(val_set, shuffle=False)
    train = (
        RASampler(train_set, num_replicas=1, rank=0, seed=seed, repetitions=ra_reps)
        if ra_sampler
        else SeededRandomSampler(train_set, seed=seed)
    )
    return train, SequentialSampler(val_set)


# ------------------------------------------------------------------------------------------- mixup / cutmix


class MixupCutmixCollate:
    """``collate_fn``: default-collate a batch, then apply MixUp or CutMix (one picked per batch when both are
    on). Targets become soft, shape ``(N, num_classes)``. A class (not a closure) so it pickles for workers."""

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
        images, targets = default_collate(batch)
        return self.mix(images, targets)


def mixup_cutmix_collate(num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> Callable | None:
    """A mixup/cutmix ``collate_fn`` for the train DataLoader, or None when both alphas are 0."""
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(f"--mixup-alpha and --cutmix-alpha must be >= 0, got {mixup_alpha}, {cutmix_alpha}")
    if mixup_alpha == 0 and cutmix_alpha == 0:
        return None
    return MixupCutmixCollate(num_classes, mixup_alpha, cutmix_alpha)
