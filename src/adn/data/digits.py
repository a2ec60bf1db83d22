"""The default built-in dataset: the 1,797 8x8 handwritten digits that scikit-learn ships inside its package (no
download), split 80/20 (stratified, fixed seed) into train/val and served as 3-channel uint8 images."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

__all__ = ["BUILTIN_NAME", "DigitsDataset"]

BUILTIN_NAME = (
    "UCI Optical Recognition of Handwritten Digits (8x8, 10 classes, 1,797 images; E. Alpaydin & C. Kaynak, "
    "1998) as bundled with scikit-learn (sklearn.datasets.load_digits; package BSD-3-Clause, data CC BY 4.0 "
    "per the UCI repository)"
)

_DIGITS_VAL_FRACTION = 0.2
_DIGITS_SPLIT_SEED = 0


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
