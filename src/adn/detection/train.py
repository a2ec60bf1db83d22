"""The detection training loop: self-distillation (``method="adn"``) or plain training of one sub-network,
on one process or under torchrun (DDP), with per-epoch atomic checkpoints, resume and final calibration."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from ..core.checkpoint import load_checkpoint, save_checkpoint
from ..core.network import BATCH_NORM_TYPES
from ..core.skipconfig import format_skip, parse_skip
from ..runtime.distributed import DistState, cleanup_distributed, init_distributed
from ..training.config import OptimConfig
from ..training.optim import build_optimizer, build_scheduler
from .config import DetectionDataConfig, DetectionEvalConfig, DetectionTrainConfig, to_dict
from .data import coco_dataset, collate, detection_transforms, write_digit_scenes
from .evaluate import calibrate_detector, evaluate_subnets
from .losses import detection_step, plain_step, unused_parameters
from .models import AdaptiveDetector

__all__ = ["TrainResult", "build_split", "evaluate_checkpoint", "load_trained", "train_detector"]

CHECKPOINT = "checkpoint.pth"


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    epochs: int
    steps: int
    train_time_s: float
    final_loss: float


def build_split(data: DetectionDataConfig, split: str, train: bool, num_classes: int | None, masks: bool = True):
    """The ``split`` ("train"/"val") dataset of ``data`` (the built-in scenes are written first if needed)."""
    if data.data == "builtin":
        name = f"detect-digits-s{data.builtin_seed}-{data.builtin_train}-{data.builtin_val}-{data.builtin_size}"
        root = write_digit_scenes(
            Path(data.root) / name, data.builtin_seed, data.builtin_train, data.builtin_val, data.builtin_size
        )
        images, ann = root / split, root / "annotations" / f"instances_{split}.json"
    else:
        root = Path(data.data)
        if not root.is_dir():
            raise NotADirectoryError(f"--data {root}: no such folder (a COCO-format dataset, or 'builtin')")
        images = root / (data.train_images if split == "train" else data.val_images)
        ann = root / (data.train_ann if split == "train" else data.val_ann)
        if not images.is_dir():
            flag = "--train-images" if split == "train" else "--val-images"
            raise NotADirectoryError(f"{flag}: no image folder {images}")
    return coco_dataset(images, ann, detection_transforms(train), num_classes, data.allow_empty, masks)


def build_optim(det: nn.Module, config: DetectionTrainConfig, total_steps: int):
    """``(optimizer, scheduler)`` from the shared builders (:mod:`adn.training.optim`), the scheduler stepped per
    iteration (so the :class:`OptimConfig`'s "epochs" count iterations here): SGD; a linear warm-up from 0.001x
    over ``warmup_steps`` (at most half the run), then a cosine decay to 0 -- torchvision's detection recipe."""
    optim = OptimConfig(
        epochs=total_steps,
        opt="sgd",
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        lr_scheduler="cosineannealinglr",
        lr_warmup_epochs=min(config.warmup_steps, total_steps // 2),
        lr_warmup_method="linear",
        lr_warmup_decay=0.001,
    )
    optimizer = build_optimizer(det, optim)
    return optimizer, build_scheduler(optimizer, optim)


def _check_resume(saved: dict, config: DetectionTrainConfig, path: Path) -> None:
    old = saved.get("config", {})
    for key in ("kind", "backbone", "num_classes"):
        if old.get("detector", {}).get(key) != getattr(config.detector, key):
            raise ValueError(
                f"cannot resume {path}: it was trained with {key}={old.get('detector', {}).get(key)!r}, this run has "
                f"{getattr(config.detector, key)!r}; use another --output-dir or the same settings"
            )


def train_detector(config: DetectionTrainConfig) -> TrainResult:
    """Train ``config.detector`` on ``config.data``; returns where the checkpoint is and how long it took. Under
    torchrun (or srun) it joins the process group as ``adn train`` does, and leaves it at the end."""
    state = init_distributed(config.device)
    try:
        return _train(config, state)
    finally:
        if state.distributed:
            cleanup_distributed()


def _train(config: DetectionTrainConfig, state: DistState) -> TrainResult:
    distributed, rank, world, device = state.distributed, state.rank, state.world_size, state.device
    torch.manual_seed(config.seed)
    det = config.detector.build().to(device)
    masks = config.detector.kind == "maskrcnn"
    train_set = build_split(config.data, "train", True, config.detector.num_classes, masks)
    generator = torch.Generator().manual_seed(config.seed)
    sampler = (
        DistributedSampler(train_set, world, rank, seed=config.seed)
        if distributed
        else RandomSampler(train_set, generator=generator)
    )
    loader = DataLoader(
        train_set, config.data.batch_size, sampler=sampler, collate_fn=collate, num_workers=config.data.workers
    )
    steps_per_epoch = len(loader) if config.max_steps is None else min(len(loader), config.max_steps)
    optimizer, scheduler = build_optim(det, config, steps_per_epoch * config.epochs)
    out = Path(config.output_dir)
    path, start_epoch, spent = out / CHECKPOINT, 0, 0.0
    if config.resume and path.is_file():
        start_epoch, spent = _resume(path, config, det, optimizer, scheduler)
    model = DistributedDataParallel(det) if distributed else det
    skip = parse_skip(config.train_skip, det.num_stages) if config.train_skip else (False,) * det.num_stages
    tie = unused_parameters(det, (True,) * det.num_stages if config.method == "adn" else skip) if distributed else None
    loss, steps = math.nan, 0
    for epoch in range(start_epoch, config.epochs):
        if distributed:
            sampler.set_epoch(epoch)
        generator.manual_seed(config.seed * 1000 + epoch)  # each epoch's order is its own: resuming keeps it
        t0 = time.perf_counter()
        loss = _epoch(model, det, config, loader, optimizer, scheduler, steps_per_epoch, epoch, skip, tie, rank)
        spent += time.perf_counter() - t0
        steps += steps_per_epoch
        if epoch + 1 == config.epochs and config.calibrate_batches and _has_batch_norm(det):
            calib = build_split(config.data, "train", False, config.detector.num_classes, masks)
            calibrate_detector(
                det, DataLoader(calib, config.data.batch_size, collate_fn=collate), "all", config.calibrate_batches
            )
        if rank == 0:  # atomically: a crash leaves the previous epoch's checkpoint
            state = {"model": det.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1}
            state.update(lr_scheduler=scheduler.state_dict(), config=to_dict(config), train_time_s=spent)
            save_checkpoint({**state, "rng": torch.get_rng_state()}, path)
    if distributed:
        dist.barrier()
    return TrainResult(path, config.epochs, steps, spent, loss)


def _resume(path: Path, config: DetectionTrainConfig, det, optimizer, scheduler) -> tuple[int, float]:
    """Load a run's checkpoint to continue it; returns (next epoch, training seconds so far)."""
    saved = load_checkpoint(path)
    _check_resume(saved, config, path)
    det.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    schedule = saved["lr_scheduler"]
    if "lr_lambdas" in schedule:  # a checkpoint from before the shared builders (a LambdaLR, the same curve)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": it only catches up
            for _ in range(int(schedule["last_epoch"])):
                scheduler.step()
    else:
        scheduler.load_state_dict(schedule)
    torch.set_rng_state(saved["rng"])
    return int(saved["epoch"]), float(saved.get("train_time_s", 0.0))


def _has_batch_norm(det: AdaptiveDetector) -> bool:
    return any(isinstance(m, BATCH_NORM_TYPES) for m in det.body.modules())


def _epoch(model, det, config, loader, optimizer, scheduler, steps, epoch, skip, tie, rank) -> float:
    det.train()
    bar = None
    if config.progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, file=sys.stderr)
    running = torch.zeros(2, dtype=torch.float64)
    try:
        for i, (images, targets) in enumerate(loader):
            if i >= steps:
                break
            images = [im.to(config.device) for im in images]
            targets = [{k: (v.to(config.device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
            optimizer.zero_grad(set_to_none=True)
            if config.method == "adn":
                parts = detection_step(model, config.distill, images, targets, tie)
                value = parts.super + parts.base
                text = (
                    f"super {parts.super:.3f} base {parts.base_detection:.3f} "
                    f"feat {parts.feature:.3f} pred {parts.prediction:.3f}"
                )
            else:
                value = plain_step(model, images, targets, skip, tie)
                text = f"{format_skip(skip)} {value:.3f}"
            if not torch.isfinite(value):
                raise FloatingPointError(
                    f"loss is {value.item()} at epoch {epoch + 1} step {i}: training diverged; lower --lr"
                )
            if config.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(det.parameters(), config.clip_grad_norm)
            optimizer.step()
            scheduler.step()
            running += torch.stack([value.double().cpu(), torch.ones((), dtype=torch.float64)])
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(text)
    finally:
        if bar is not None:
            bar.close()
    mean = (running[0] / running[1].clamp(min=1)).item()
    if rank == 0:
        print(
            f"epoch {epoch + 1}/{config.epochs}  loss {mean:.4f}  lr {scheduler.get_last_lr()[0]:.5f}", file=sys.stderr
        )
    return mean


def load_trained(
    path: str | os.PathLike, device: str = "cpu"
) -> tuple[AdaptiveDetector, DetectionTrainConfig, dict[str, Any]]:
    """A trained detector from one of our checkpoints, with its training config."""
    from .config import from_dict

    saved = load_checkpoint(path, map_location=device)
    if not isinstance(saved, dict) or "config" not in saved or "model" not in saved:
        raise ValueError(
            f"{path} is not an adn detection checkpoint (no 'config'/'model'); train one with adn detect train"
        )
    config = from_dict(DetectionTrainConfig, saved["config"])
    det = dataclasses.replace(config.detector, weights=None).build().to(device)  # the weights are in the file
    det.load_state_dict(saved["model"])
    return det, config, saved


def evaluate_checkpoint(config: DetectionEvalConfig) -> list[dict[str, Any]]:
    """Every requested sub-network of a trained detector (:func:`evaluate_subnets`) on the val split of
    ``config.data`` -- the checkpoint's own data unless ``config.data`` names another; recalibrated first with
    ``config.calibrate_batches`` > 0. Writes the rows as JSON to ``config.output`` if given."""
    det, trained, _ = load_trained(config.checkpoint, config.device)
    data = trained.data if config.data == DetectionDataConfig() else config.data
    masks = det.kind == "maskrcnn"
    val = build_split(data, "val", False, det.num_classes, masks)
    loader = DataLoader(val, data.batch_size, collate_fn=collate, num_workers=data.workers)
    if config.calibrate_batches and _has_batch_norm(det):
        calib = build_split(data, "train", False, det.num_classes, masks)
        loader_c = DataLoader(calib, data.batch_size, collate_fn=collate)
        calibrate_detector(det, loader_c, "all" if config.subnets is None else config.subnets, config.calibrate_batches)
    size = trained.detector.image_size
    rows = evaluate_subnets(det, loader, val.coco, config.subnets, size, config.latency, progress=True)
    if config.output:
        Path(config.output).parent.mkdir(parents=True, exist_ok=True)
        Path(config.output).write_text(json.dumps(rows, indent=1))
    return rows
