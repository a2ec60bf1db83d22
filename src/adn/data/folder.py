"""Your own images: ``DIR/train`` and ``DIR/val`` ImageFolder trees (ILSVRC-2012 layout), checked up front so
every layout mistake is one line, and read with a policy for unreadable image files."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import find_classes

__all__ = ["BAD_IMAGE_POLICIES", "BadImageError", "load_image"]

#: what to do with an image file that cannot be read: stop with its name, or skip it (warn, use the next image)
BAD_IMAGE_POLICIES = ("stop", "skip")


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

    @staticmethod
    def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        from .cache import cached_index  # --cache-dataset: the scan's result saved and reused

        def scan():
            return ImageFolder.make_dataset(directory, class_to_idx, extensions, is_valid_file, allow_empty)

        return cached_index(directory, class_to_idx, extensions, scan)

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
