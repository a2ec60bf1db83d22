"""COCO mAP (pycocotools) of every sub-network of a detector, with backbone GMACs, latency and per-sub-network
BatchNorm calibration (:func:`adn.calibrate` on the body, fed the detector's own normalised inputs)."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..core.calibrate import calibrate
from ..core.skipconfig import SkipLike, format_skip
from ..core.skipconfig import subnets as all_subnets
from .models import AdaptiveDetector

__all__ = [
    "backbone_macs",
    "calibrate_detector",
    "coco_map",
    "coco_results",
    "evaluate_detector",
    "evaluate_subnets",
    "latency_ms",
]

_STATS = ("mAP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")


def coco_results(image_id: int, output: dict[str, torch.Tensor], masks: bool = False) -> list[dict]:
    """One image's detections (torchvision's output dict, labels = COCO category ids) as COCO result entries:
    ``bbox`` in ``[x, y, w, h]``, and with ``masks`` the mask (probability > 0.5) as RLE ``segmentation``."""
    boxes = output["boxes"].detach().cpu().double()
    boxes[:, 2:] -= boxes[:, :2]
    out = [
        {"image_id": int(image_id), "category_id": int(c), "bbox": [round(v, 3) for v in b], "score": float(s)}
        for b, c, s in zip(boxes.tolist(), output["labels"].tolist(), output["scores"].tolist(), strict=True)
    ]
    if masks and out:
        from pycocotools import mask as mask_utils

        binary = (output["masks"][:, 0] > 0.5).cpu().numpy().astype(np.uint8)
        for entry, m in zip(out, binary, strict=True):
            rle = mask_utils.encode(np.asfortranarray(m))
            rle["counts"] = rle["counts"].decode("ascii")
            entry["segmentation"] = rle
    return out


def coco_map(coco_gt: Any, results: list[dict], iou_type: str = "bbox") -> dict[str, float]:
    """COCOeval's summary for ``results`` against ``coco_gt`` (a pycocotools COCO): ``mAP`` (AP@[.5:.95]),
    ``AP50``, ``AP75`` and by object size, in percent. No detections at all scores 0."""
    from pycocotools.cocoeval import COCOeval

    if not results:
        return dict.fromkeys(_STATS, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its table; we return the numbers
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {k: 100.0 * max(0.0, float(v)) for k, v in zip(_STATS, evaluator.stats[:6], strict=True)}


@torch.inference_mode()
def evaluate_detector(
    det: AdaptiveDetector, loader: Iterable, coco_gt: Any, skip: SkipLike = None, device: str = "cpu"
) -> dict[str, float]:
    """COCO mAP of sub-network ``skip`` on ``loader`` (``(images, targets)`` batches with ``image_id``):
    ``bbox_mAP``, ``bbox_AP50`` ... and for Mask R-CNN ``segm_mAP`` ...; in eval mode (calibrated statistics of
    ``skip`` if the body has them)."""
    was = det.training
    det.eval()
    masks = det.kind == "maskrcnn"
    results: list[dict] = []
    try:
        for images, targets in loader:
            outputs = det([im.to(device) for im in images], skip=skip)
            for target, output in zip(targets, outputs, strict=True):
                results += coco_results(int(target["image_id"]), output, masks)
    finally:
        det.train(was)
    row = {f"bbox_{k}": v for k, v in coco_map(coco_gt, results, "bbox").items()}
    if masks:
        row.update({f"segm_{k}": v for k, v in coco_map(coco_gt, results, "segm").items()})
    return row


def _normalised(det: AdaptiveDetector, loader: Iterable, device: str) -> Iterator[torch.Tensor]:
    transform = det.detector.transform
    for images, _ in loader:
        yield transform([im.to(device) for im in images])[0].tensors


def calibrate_detector(
    det: AdaptiveDetector, loader: Iterable, subnets: str | Sequence[SkipLike] = "all", batches: int = 20
) -> AdaptiveDetector:
    """Per-sub-network BatchNorm statistics for the body (:func:`adn.calibrate`) from ``batches`` batches of
    ``loader``, normalised and resized by the detector's own transform. Frozen norms (FrozenBatchNorm2d) have
    no statistics to estimate and are left alone."""
    device = str(next(det.parameters()).device)
    calibrate(det.body, _normalised(det, loader, device), subnets=subnets, batches=batches)
    return det


@torch.no_grad()
def backbone_macs(det: AdaptiveDetector, skip: SkipLike = None, size: int | tuple[int, int] = 800) -> int:
    """Multiply-accumulates of the backbone (body + FPN) of sub-network ``skip`` on one ``size`` image."""
    h, w = (size, size) if isinstance(size, int) else size
    param = next(det.parameters())
    x = torch.zeros(1, 3, h, w, device=param.device, dtype=param.dtype)
    was = det.training
    det.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            det.backbone.at(det.resolve_skip(skip))(x)
    finally:
        det.train(was)
    return counter.get_total_flops() // 2


@torch.inference_mode()
def latency_ms(det: AdaptiveDetector, skip: SkipLike = None, size: int = 800, min_run_time: float = 0.5) -> float:
    """Median wall time of one whole-detector inference on one ``size`` image (torch.utils.benchmark)."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA runtime" on CPU machines
    from torch.utils.benchmark import Timer

    was = det.training
    det.eval()
    param = next(det.parameters())
    try:
        image = torch.rand(3, size, size, device=param.device, generator=torch.Generator().manual_seed(0))
        timer = Timer("det([x], skip=c)", globals={"det": det, "x": image, "c": det.resolve_skip(skip)})
        return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3
    finally:
        det.train(was)


def evaluate_subnets(
    det: AdaptiveDetector,
    loader: Iterable,
    coco_gt: Any,
    subnets: Sequence[SkipLike] | None = None,
    size: int = 800,
    latency: bool = True,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """One row per sub-network (default: all): ``skip``, COCO mAP (:func:`evaluate_detector`), backbone
    ``gmacs`` and ``latency_ms`` at ``size``."""
    configs = list(all_subnets(det.num_stages) if subnets is None else [det.resolve_skip(c) for c in subnets])
    rows = []
    for i, skip in enumerate(configs):
        row: dict[str, Any] = {"skip": format_skip(skip)}
        row.update(evaluate_detector(det, loader, coco_gt, skip, str(next(det.parameters()).device)))
        row["gmacs"] = backbone_macs(det, skip, size) / 1e9
        if latency:
            row["latency_ms"] = latency_ms(det, skip, size)
        rows.append(row)
        if progress:
            line = f"[{i + 1}/{len(configs)}] {row['skip']}  bbox mAP {row['bbox_mAP']:.2f}"
            print(line, file=sys.stderr, flush=True)
    return rows
