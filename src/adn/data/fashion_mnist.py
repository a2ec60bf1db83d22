"""The second built-in dataset: Fashion-MNIST, 70,000 28x28 grey images of 10 kinds of garment (Zalando), read
where it already lies — Debian's ``dataset-fashion-mnist`` package, or a folder you name — or fetched by
torchvision on request. The ``.gz`` files are decompressed in memory, never extracted next to the project.

Lookup order: an explicit ``root`` (the four files in it, plain or ``.gz``, or torchvision's
``root/FashionMNIST/raw`` layout), then :data:`DEBIAN_DIR`, then torchvision's layout under
:func:`default_root`. ``download=True`` lets torchvision fetch the files into ``root`` (or the default root) when
no copy is found.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.datasets import FashionMNIST

__all__ = ["DEBIAN_DIR", "FASHION_MNIST_NAME", "FashionMNISTDataset", "default_root", "find_fashion_mnist", "read_idx"]

FASHION_MNIST_NAME = (
    "Fashion-MNIST (28x28 grey, 10 classes, 60,000 train / 10,000 test images; H. Xiao, K. Rasul & R. Vollgraf, "
    "Zalando Research, 2017; MIT licence)"
)
#: where Debian's ``dataset-fashion-mnist`` package installs the files (a module constant so tests can hide it)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def default_root() -> Path:
    """Where ``download=True`` puts the files without an explicit root: ``$ADN_DATA/fashion-mnist`` when
    ``ADN_DATA`` is set, else ``~/.cache/adn/fashion-mnist``."""
    base = os.environ.get("ADN_DATA")
    return Path(base).expanduser() / "fashion-mnist" if base else Path.home() / ".cache" / "adn" / "fashion-mnist"


def _file(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` (torchvision's extracted copy) or ``folder/stem.gz`` (Debian's), whichever exists."""
    for path in (folder / stem, folder / f"{stem}.gz"):
        if path.is_file():
            return path
    return None


def _searched(root: str | Path | None) -> list[Path]:
    folders = []
    if root is not None:
        root = Path(root).expanduser()
        folders += [root, root / "FashionMNIST" / "raw"]
    return [*folders, DEBIAN_DIR, default_root() / "FashionMNIST" / "raw"]


def find_fashion_mnist(root: str | Path | None = None) -> Path | None:
    """The first folder, in lookup order, that holds all four Fashion-MNIST files; None if none does."""
    return next((d for d in _searched(root) if all(_file(d, s) for s in _STEMS)), None)


def read_idx(path: str | Path) -> np.ndarray:
    """An idx file of unsigned bytes (the MNIST format; gzip-compressed or not) as a uint8 array of its shape.
    Decompresses in memory; a damaged file raises a one-line ``ValueError`` naming it."""
    path = Path(path)

    def damaged(reason: str) -> ValueError:
        return ValueError(f"Fashion-MNIST file {path} is damaged ({reason}); delete it or reinstall the data")

    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise damaged(f"gzip: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise damaged("not an idx file of unsigned bytes")
    ndim, offset = raw[3], 4 + 4 * raw[3]
    if len(raw) < offset:
        raise damaged("truncated header")
    shape = struct.unpack(f">{ndim}I", raw[4:offset])
    if len(raw) - offset != math.prod(shape):
        raise damaged(f"{len(raw) - offset} data bytes for shape {shape}")
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(shape)


class FashionMNISTDataset(FashionMNIST):
    """One split of Fashion-MNIST (``"train"``: the 60,000 train images, ``"val"``: the 10,000 test images):
    items are ``(transform(image), label)``, image a 3x28x28 uint8 ``tv_tensors.Image`` (grey on 3 identical
    channels) before the transform. ``classes`` are the 10 garment names (torchvision's).

    A missing copy raises one ``FileNotFoundError`` line naming the folders searched and both ways to get it.
    """

    def __init__(
        self,
        split: str,
        transform: Callable | None = None,
        *,
        root: str | Path | None = None,
        download: bool = False,
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', not {split!r}")
        target = Path(root).expanduser() if root is not None else default_root()
        self._source = find_fashion_mnist(root)
        if self._source is None and not download:
            searched = ", ".join(dict.fromkeys(str(d) for d in _searched(root)))
            raise FileNotFoundError(
                f"Fashion-MNIST not found in {searched}; install Debian's dataset-fashion-mnist "
                f"(apt-get install dataset-fashion-mnist), or pass --download to let torchvision fetch it into "
                f"{target}"
            )
        self.split = split
        try:
            root_dir = str(self._source or target)  # torchvision's ``root``: where the files are, or will be
            super().__init__(root_dir, train=split == "train", transform=transform, download=download)
        except RuntimeError as exc:  # torchvision's download errors span several lines
            if self._source is not None:
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RuntimeError(
                f"could not download Fashion-MNIST into {target} ({first.rstrip(':')}); install Debian's "
                "dataset-fashion-mnist (apt-get install dataset-fashion-mnist) instead"
            ) from None

    @property
    def raw_folder(self) -> str:
        return os.path.join(self.root, "FashionMNIST", "raw")  # torchvision's layout, named after its class

    @property
    def processed_folder(self) -> str:
        return os.path.join(self.root, "FashionMNIST", "processed")

    @property
    def folder(self) -> Path:
        """The folder the files are read from."""
        return self._source or Path(self.raw_folder)

    # torchvision's hooks: look for the files in ``folder`` (plain or .gz) and read them in place
    def _check_legacy_exist(self) -> bool:
        return False  # the pre-0.9 torchvision ``processed/*.pt`` copies are not read

    def _check_exists(self) -> bool:
        return all(_file(self.folder, s) for s in _STEMS)

    def download(self) -> None:
        if self._source is None:
            super().download()

    def _load_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        prefix = "train" if self.train else "t10k"
        images = read_idx(_file(self.folder, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_file(self.folder, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"Fashion-MNIST files in {self.folder} do not fit together: images {images.shape}, "
                f"labels {labels.shape}; delete them or reinstall the data"
            )
        return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image = tv_tensors.Image(self.data[i].unsqueeze(0).expand(3, -1, -1))
        if self.transform is not None:
            image = self.transform(image)
        target = int(self.targets[i])
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def extra_repr(self) -> str:
        return f"Split: {self.split}\nFiles: {self.folder}"
