"""Typed, frozen configurations of detection training and evaluation: what the CLI hands to the library."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .losses import DetectionDistillation
from .models import KINDS, AdaptiveDetector, build_detector

__all__ = ["DetectionDataConfig", "DetectorConfig", "DetectionEvalConfig", "DetectionTrainConfig", "from_dict"]

METHODS = ("adn", "plain")


@dataclass(frozen=True)
class DetectorConfig:
    """The detector: kind, backbone, class count (background included) and sizes. The defaults suit small images
    (the built-in 96 px scenes); for COCO use ``image_size`` 800, ``out_channels`` 256 and torchvision's head sizes."""

    kind: str = "fasterrcnn"
    backbone: str = "tiny"
    num_classes: int = 11
    #: initial backbone weights: an adn classification checkpoint, torchvision's or a published ADN file
    weights: str | None = None
    frozen_bn: bool = False
    trainable_stages: int | None = None
    out_channels: int = 64
    representation_size: int = 256
    mask_channels: tuple[int, ...] = (64, 64)
    #: images are resized so that their shorter side is this (and the longer at most ``max_size``)
    image_size: int = 96
    max_size: int | None = None
    anchor_scale: float | None = None
    rpn_pre_nms_top_n: int = 300
    rpn_post_nms_top_n: int = 100
    box_batch_size_per_image: int = 128
    detections_per_img: int = 50

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown detector {self.kind!r}; choose from {', '.join(KINDS)}")

    def build(self) -> AdaptiveDetector:
        sizes: dict[str, Any] = dict(min_size=self.image_size, max_size=self.max_size or self.image_size)
        if self.kind == "retinanet":
            extra: dict[str, Any] = dict(detections_per_img=self.detections_per_img)
        else:
            top = dict(pre=self.rpn_pre_nms_top_n, post=self.rpn_post_nms_top_n)
            extra = {f"rpn_{k}_nms_top_n_{phase}": v for k, v in top.items() for phase in ("train", "test")}
            extra.update(
                box_batch_size_per_image=self.box_batch_size_per_image,
                box_detections_per_img=self.detections_per_img,
                representation_size=self.representation_size,
            )
            if self.kind == "maskrcnn":
                extra["mask_channels"] = self.mask_channels
        return build_detector(
            self.kind,
            self.backbone,
            self.num_classes,
            weights=self.weights,
            frozen_bn=self.frozen_bn,
            trainable_stages=self.trainable_stages,
            out_channels=self.out_channels,
            anchor_scale=self.anchor_scale,
            **sizes,
            **extra,
        )


def _default_root() -> str:
    base = os.environ.get("ADN_DATA")
    return str(Path(base).expanduser() if base else Path.home() / ".cache" / "adn")


@dataclass(frozen=True)
class DetectionDataConfig:
    """Where the images and annotations are. ``data="builtin"``: the built-in digit scenes (written once under
    ``root``); else a COCO-format folder with ``train_images``/``val_images`` and their annotation files
    (relative to ``data``)."""

    data: str = "builtin"
    train_images: str = "train2017"
    train_ann: str = "annotations/instances_train2017.json"
    val_images: str = "val2017"
    val_ann: str = "annotations/instances_val2017.json"
    builtin_train: int = 800
    builtin_val: int = 200
    builtin_size: int = 96
    builtin_seed: int = 0
    root: str = field(default_factory=_default_root)
    allow_empty: bool = False
    batch_size: int = 8
    workers: int = 0


@dataclass(frozen=True)
class DetectionTrainConfig:
    """One detection training run. ``method="adn"``: self-distillation (super-net and base-net each step);
    ``"plain"``: ordinary training of the one sub-network ``train_skip`` (default the super-net; the base-net's
    config trains "the base-net's depth alone")."""

    output_dir: str
    detector: DetectorConfig = DetectorConfig()
    data: DetectionDataConfig = DetectionDataConfig()
    method: str = "adn"
    train_skip: str | None = None
    distill: DetectionDistillation = DetectionDistillation()
    epochs: int = 12
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    clip_grad_norm: float | None = 10.0
    seed: int = 0
    resume: bool = False
    calibrate_batches: int = 10
    max_steps: int | None = None
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.method == "adn" and self.train_skip is not None:
            raise ValueError("--train-skip is for --method plain (adn trains the super-net and the base-net)")
        if self.epochs < 1 or self.lr <= 0:
            raise ValueError("--epochs must be >= 1 and --lr > 0")


@dataclass(frozen=True)
class DetectionEvalConfig:
    """Evaluation of a trained detector's sub-networks (``subnets``: skip configs, default all)."""

    checkpoint: str
    data: DetectionDataConfig = DetectionDataConfig()
    subnets: tuple[str, ...] | None = None
    calibrate_batches: int = 0
    latency: bool = True
    output: str | None = None
    device: str = "cpu"


def from_dict(cls: type, data: dict) -> Any:
    """Rebuild a (nested) config from :func:`dataclasses.asdict` output, e.g. a checkpoint's ``config``."""
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in known:
            continue
        kind = {"detector": DetectorConfig, "data": DetectionDataConfig, "distill": DetectionDistillation}.get(key)
        kwargs[key] = from_dict(kind, value) if kind is not None and isinstance(value, dict) else value
        if key == "mask_channels" and value is not None:
            kwargs[key] = tuple(value)
    return cls(**kwargs)


def to_dict(config: Any) -> dict:
    return asdict(config)
