"""Detection data in COCO format: the built-in digit scenes (no download) and any COCO-format dataset.

**Built-in scenes** (:func:`make_scene`, :func:`write_digit_scenes`): scikit-learn's 8x8 digits (the ones
``adn train`` uses), each upscaled by whole factors (2-4 px per pixel, independently in x and y, nearest
neighbour) and pasted without overlap on a noisy grey canvas. Each object's mask is exactly its nonzero upscaled
pixels and its box the tight box of that mask, so the annotations are exact. A scene is a pure function of
``(seed, split, index)``; train scenes use the digits' train split, val scenes the val split.

**COCO datasets** (:func:`coco_dataset`): ``torchvision.datasets.CocoDetection`` wrapped for transforms v2
(``boxes`` as ``BoundingBoxes``, ``masks`` as ``Mask``), after :func:`check_annotations` has checked the file:
a bad file, category ids beyond the model's classes, or images without boxes are each one error line.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..data.digits import _digits_arrays, _digits_split

__all__ = [
    "DIGIT_CATEGORIES",
    "Scene",
    "check_annotations",
    "coco_dataset",
    "collate",
    "detection_transforms",
    "load_coco",
    "make_scene",
    "write_digit_scenes",
]

DIGIT_CATEGORIES = [{"id": d + 1, "name": str(d)} for d in range(10)]  # COCO ids start at 1; 0 is background
_SPLIT_SALT = {"train": 0, "val": 1}


@dataclass(frozen=True)
class Scene:
    """One built-in image (HxWx3 uint8) and its objects: boxes (x0, y0, x1, y1, pixel edges), digit labels 0-9,
    masks (N x H x W bool)."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    masks: np.ndarray


def make_scene(seed: int, split: str, index: int, size: int = 96, max_objects: int = 4) -> Scene:
    """Scene ``index`` of ``split``: 1..``max_objects`` digits on a ``size`` x ``size`` canvas."""
    if split not in _SPLIT_SALT:
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    rng = np.random.default_rng([seed, _SPLIT_SALT[split], index])
    digits, labels = _digits_arrays()
    pool = _digits_split()[_SPLIT_SALT[split]]
    canvas = rng.integers(0, 48, size=(size, size), dtype=np.uint8)  # background noise, below most ink
    taken = np.zeros((size, size), dtype=bool)
    boxes, classes, masks = [], [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        pick = int(pool[rng.integers(len(pool))])
        fy, fx = (int(f) for f in rng.integers(2, 5, size=2))
        glyph = np.kron(digits[pick], np.ones((fy, fx), dtype=np.uint8))
        h, w = glyph.shape
        for _attempt in range(20):  # rejection sampling of a free spot (1 px apart)
            y, x = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
            if not taken[max(0, y - 1) : y + h + 1, max(0, x - 1) : x + w + 1].any():
                break
        else:
            continue
        ink = glyph > 0
        mask = np.zeros((size, size), dtype=bool)
        mask[y : y + h, x : x + w] = ink
        canvas[mask] = glyph[ink]
        taken[y : y + h, x : x + w] = True
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        classes.append(int(labels[pick]))
        masks.append(mask)
    return Scene(
        np.repeat(canvas[:, :, None], 3, axis=2),
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(classes, dtype=np.int64),
        np.stack(masks) if masks else np.zeros((0, size, size), dtype=bool),
    )


def _coco_annotations(scene: Scene, image_id: int, first_id: int) -> list[dict]:
    from pycocotools import mask as mask_utils

    out = []
    for k, (box, label, mask) in enumerate(zip(scene.boxes, scene.labels, scene.masks, strict=True)):
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        x0, y0, x1, y1 = (float(v) for v in box)
        out.append(
            {
                "id": first_id + k,
                "image_id": image_id,
                "category_id": int(label) + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": float(mask.sum()),
                "segmentation": rle,
                "iscrowd": 0,
            }
        )
    return out


def write_digit_scenes(
    root: str | os.PathLike, seed: int = 0, train: int = 800, val: int = 200, size: int = 96, max_objects: int = 4
) -> Path:
    """Write the built-in scenes as a COCO dataset under ``root``: ``{train,val}/*.png`` and
    ``annotations/instances_{train,val}.json``. Written to a temporary folder renamed into place, so a
    half-written set is never used; an existing complete ``root`` is reused as is. Returns ``root``."""
    from PIL import Image

    root = Path(root)
    if (root / "annotations" / "instances_val.json").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        (tmp / "annotations").mkdir()
        for split, count in (("train", train), ("val", val)):
            (tmp / split).mkdir()
            images, annotations = [], []
            for i in range(count):
                scene = make_scene(seed, split, i, size, max_objects)
                name = f"{i:06d}.png"
                Image.fromarray(scene.image).save(tmp / split / name)
                images.append({"id": i + 1, "file_name": name, "height": size, "width": size})
                annotations += _coco_annotations(scene, i + 1, len(annotations) + 1)
            coco = {"images": images, "annotations": annotations, "categories": DIGIT_CATEGORIES}
            (tmp / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
        try:
            os.replace(tmp, root)
        except OSError:  # another process finished first
            if not (root / "annotations" / "instances_val.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


# ------------------------------------------------------------------------------------------- COCO datasets
def check_annotations(ann_file: str | os.PathLike, num_classes: int | None = None, allow_empty: bool = False) -> dict:
    """Read and check a COCO annotation file; returns its JSON. ``num_classes`` (background included): every
    category id must be below it. ``allow_empty``: images without boxes are kept (as negatives) instead of
    being an error."""
    path = Path(ann_file)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"annotation file {path} is not valid JSON ({exc.__class__.__name__}: {exc})") from None
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data, dict) or k not in data]
    if missing:
        raise ValueError(f"annotation file {path} is not COCO format: no {', '.join(repr(k) for k in missing)} entry")
    bad = [a.get("id") for a in data["annotations"] if not _valid_box(a.get("bbox"))]
    if bad:
        raise ValueError(
            f"annotation file {path}: {len(bad)} annotations have no valid bbox [x, y, w, h] with w, h > 0 "
            f"(e.g. id {bad[0]}); fix or remove them"
        )
    ids = sorted({int(c["id"]) for c in data["categories"]})
    if num_classes is not None and ids and (ids[0] < 1 or ids[-1] >= num_classes):
        raise ValueError(
            f"class-count mismatch: {path} has category ids {ids[0]}..{ids[-1]} but the model has {num_classes} "
            f"classes (background included); use --num-classes {ids[-1] + 1} (a new model) or the matching file"
        )
    with_boxes = {a["image_id"] for a in data["annotations"]}
    empty = [im["id"] for im in data["images"] if im["id"] not in with_boxes]
    if empty and not allow_empty:
        raise ValueError(
            f"{len(empty)} of {len(data['images'])} images in {path} have no boxes (e.g. image id {empty[0]}); "
            "pass --allow-empty to train on them as negatives, or remove them"
        )
    return data


def _valid_box(box: Any) -> bool:
    numbers = isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)
    return numbers and box[2] > 0 < box[3]


def load_coco(data: dict) -> Any:
    """A ``pycocotools.coco.COCO`` index of already-loaded annotations (without its console chatter)."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class _Prepared(Dataset):
    """Gives images without annotations empty ``boxes``/``labels``/``masks`` (the detectors accept negatives),
    then applies the transforms to image and target together."""

    def __init__(self, dataset: Dataset, transforms: Any, masks: bool) -> None:
        self.dataset, self.transforms, self.masks = dataset, transforms, masks

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Any, dict]:
        image, target = self.dataset[i]
        if "boxes" not in target:
            w, h = image.size  # CocoDetection gives PIL images
            target = {
                **target,
                "boxes": tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(h, w)),
                "labels": torch.zeros(0, dtype=torch.int64),
            }
            if self.masks:
                target["masks"] = tv_tensors.Mask(torch.zeros(0, h, w, dtype=torch.uint8))
        return self.transforms(image, target) if self.transforms is not None else (image, target)


def coco_dataset(
    images: str | os.PathLike,
    ann_file: str | os.PathLike,
    transforms: Any = None,
    num_classes: int | None = None,
    allow_empty: bool = False,
    masks: bool = True,
) -> Dataset:
    """A COCO-format detection dataset: items ``(image, {"boxes", "labels", "masks", "image_id"})`` with
    transforms v2 applied jointly to image, boxes and masks. ``coco_dataset(...).coco`` is its pycocotools index."""
    from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2

    data = check_annotations(ann_file, num_classes, allow_empty)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        base = CocoDetection(str(images), str(ann_file))
    keys = ("image_id", "boxes", "labels") + (("masks",) if masks else ())
    dataset = _Prepared(wrap_dataset_for_transforms_v2(base, target_keys=keys), transforms, masks)
    dataset.coco = load_coco(data)
    return dataset


def detection_transforms(train: bool) -> v2.Compose:
    """Image to float tensor, boxes/masks along; training adds photometric jitter (no flips: digits are not
    mirror-symmetric). Detectors normalise and resize themselves."""
    steps: list[Any] = [v2.ToImage()]
    if train:
        steps.append(v2.ColorJitter(brightness=0.2, contrast=0.2))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.SanitizeBoundingBoxes()]
    return v2.Compose(steps)


def collate(batch: list) -> tuple[tuple, tuple]:
    """Detection batches are lists: images differ in size and targets in length."""
    return tuple(zip(*batch, strict=True))  # type: ignore[return-value]
