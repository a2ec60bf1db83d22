"""``adn detect train`` and ``adn detect eval``: adaptive-depth detectors (Faster R-CNN, Mask R-CNN, RetinaNet)
trained by self-distillation, every sub-network evaluated in COCO mAP. Flags become typed configs
(:mod:`adn.detection.config`) here; nothing below this module sees argparse."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..errors import UsageError
from ..runtime.threads import apply_threads
from .options import Parser, add_threads_arg

_USAGE = "usage: adn detect {train,eval} [options]   (adn detect <command> --help for its options)"


def _data_args(p: argparse.ArgumentParser, train: bool) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        default="builtin" if train else None,
        help="'builtin' (digit scenes, no download) or a COCO-format folder"
        + ("" if train else " (default: the checkpoint's)"),
    )
    g.add_argument("--train-images", default="train2017", help="train image folder, relative to --data")
    g.add_argument(
        "--train-ann", default="annotations/instances_train2017.json", help="train annotations, relative to --data"
    )
    g.add_argument("--val-images", default="val2017", help="val image folder, relative to --data")
    g.add_argument(
        "--val-ann", default="annotations/instances_val2017.json", help="val annotations, relative to --data"
    )
    g.add_argument("--builtin-train", type=int, default=800, help="built-in train scenes")
    g.add_argument("--builtin-val", type=int, default=200, help="built-in val scenes")
    g.add_argument("--builtin-seed", type=int, default=0, help="seed of the built-in scenes")
    g.add_argument(
        "--data-root", default=None, help="where the built-in scenes are written (default $ADN_DATA or ~/.cache/adn)"
    )
    g.add_argument("--allow-empty", action="store_true", help="keep images without boxes (as negatives)")
    g.add_argument("-b", "--batch-size", type=int, default=8)
    g.add_argument("-j", "--workers", type=int, default=0, help="data loading processes")


def _data_config(args: argparse.Namespace):
    from ..detection.config import DetectionDataConfig

    kwargs = dict(
        data=args.data or "builtin",
        train_images=args.train_images,
        train_ann=args.train_ann,
        val_images=args.val_images,
        val_ann=args.val_ann,
        builtin_train=args.builtin_train,
        builtin_val=args.builtin_val,
        builtin_seed=args.builtin_seed,
        allow_empty=args.allow_empty,
        batch_size=args.batch_size,
        workers=args.workers,
    )
    if args.data_root:
        kwargs["root"] = args.data_root
    return DetectionDataConfig(**kwargs)


def train_parser() -> Parser:
    p = Parser("adn detect train", "train an adaptive-depth detector by self-distillation (or plainly)")
    g = p.add_argument_group("detector")
    g.add_argument(
        "--kind", default="fasterrcnn", choices=["fasterrcnn", "maskrcnn", "retinanet"], help="torchvision detector"
    )
    g.add_argument("--backbone", default="tiny", help="tiny, a registered model (resnet50), tv:NAME or timm:NAME")
    g.add_argument("--num-classes", type=int, default=11, help="classes including background (COCO: 91)")
    g.add_argument("--weights", default=None, help="initial backbone weights (adn/torchvision/published ADN file)")
    g.add_argument("--frozen-bn", action="store_true", help="FrozenBatchNorm2d in the backbone (twins too)")
    g.add_argument("--trainable-stages", type=int, default=None, help="train only the last N backbone stages")
    g.add_argument("--image-size", type=int, default=96, help="shorter image side the detector resizes to")
    g.add_argument("--out-channels", type=int, default=64, help="FPN channels")
    g.add_argument("--representation-size", type=int, default=256, help="R-CNN box head width")
    g.add_argument("--anchor-scale", type=float, default=None, help="anchor size / stride (R-CNN 8, RetinaNet 4)")
    _data_args(p, train=True)
    g = p.add_argument_group("training")
    g.add_argument("--method", default="adn", choices=["adn", "plain"], help="self-distillation or plain training")
    g.add_argument("--train-skip", default=None, help="--method plain: the one sub-network to train (default FF..F)")
    g.add_argument("--feature-weight", type=float, default=1.0, help="base-net FPN feature term weight")
    g.add_argument("--prediction-weight", type=float, default=1.0, help="base-net prediction term weight")
    g.add_argument("--kd-temperature", type=float, default=1.0, help="temperature of the class-distribution term")
    g.add_argument("--epochs", type=int, default=12, help="training epochs")
    g.add_argument("--lr", type=float, default=0.02, help="SGD learning rate (cosine schedule after the warm-up)")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--weight-decay", type=float, default=1e-4, help="SGD weight decay")
    g.add_argument("--warmup-steps", type=int, default=100, help="linear learning-rate warm-up steps")
    g.add_argument("--clip-grad-norm", type=float, default=10.0, help="max gradient norm (0: no clipping)")
    g.add_argument("--seed", type=int, default=0, help="seed of the weights and the data order")
    g.add_argument("--max-steps", type=int, default=None, help="steps per epoch at most (quick runs)")
    g.add_argument("--calibrate-batches", type=int, default=10, help="BN calibration batches after training (0: none)")
    g = p.add_argument_group("run")
    g.add_argument("--output-dir", required=True, help="checkpoint.pth goes here")
    g.add_argument("--resume", action="store_true", help="continue from --output-dir/checkpoint.pth")
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    add_threads_arg(g)
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _train(argv: list[str]) -> int:
    from ..detection.config import DetectionTrainConfig, DetectorConfig
    from ..detection.losses import DetectionDistillation
    from ..detection.train import train_detector

    args = train_parser().parse_args(argv)
    apply_threads(args.threads)
    detector = DetectorConfig(
        kind=args.kind,
        backbone=args.backbone,
        num_classes=args.num_classes,
        weights=args.weights,
        frozen_bn=args.frozen_bn,
        trainable_stages=args.trainable_stages,
        out_channels=args.out_channels,
        representation_size=args.representation_size,
        image_size=args.image_size,
        anchor_scale=args.anchor_scale,
    )
    if args.weights and not os.path.isfile(args.weights):
        raise FileNotFoundError(f"--weights {args.weights}: no such file")
    config = DetectionTrainConfig(
        output_dir=args.output_dir,
        detector=detector,
        data=_data_config(args),
        method=args.method,
        train_skip=args.train_skip,
        distill=DetectionDistillation(args.feature_weight, args.prediction_weight, args.kd_temperature),
        epochs=args.epochs,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        clip_grad_norm=args.clip_grad_norm or None,
        seed=args.seed,
        resume=args.resume,
        calibrate_batches=args.calibrate_batches,
        max_steps=args.max_steps,
        device=args.device,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    result = train_detector(config)
    if os.environ.get("RANK", "0") == "0":
        print(f"trained {result.steps} steps in {result.train_time_s:.1f} s; checkpoint: {result.checkpoint}")
    return 0


def eval_parser() -> Parser:
    p = Parser("adn detect eval", "COCO mAP, backbone GMACs and latency of every sub-network of a trained detector")
    p.add_argument("checkpoint", help="checkpoint.pth of adn detect train")
    p.add_argument("--subnets", nargs="+", default=None, help="skip configs (e.g. FFFF TTTT); default: all")
    p.add_argument("--calibrate-batches", type=int, default=0, help="recalibrate BN with this many batches first")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--output", default=None, help="write the rows as JSON here")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    add_threads_arg(p)
    _data_args(p, train=False)
    return p


def _eval(argv: list[str]) -> int:
    from ..detection.config import DetectionDataConfig, DetectionEvalConfig
    from ..detection.train import evaluate_checkpoint

    args = eval_parser().parse_args(argv)
    apply_threads(args.threads)
    config = DetectionEvalConfig(
        checkpoint=args.checkpoint,
        data=_data_config(args) if args.data else DetectionDataConfig(),
        subnets=tuple(args.subnets) if args.subnets else None,
        calibrate_batches=args.calibrate_batches,
        latency=not args.no_latency,
        output=args.output,
        device=args.device,
    )
    rows = evaluate_checkpoint(config)
    keys = [k for k in ("bbox_mAP", "bbox_AP50", "segm_mAP", "gmacs", "latency_ms") if k in rows[0]]
    print("skip  " + "  ".join(f"{k:>10}" for k in keys))
    for row in rows:
        print(f"{row['skip']:<5} " + "  ".join(f"{row[k]:>10.3f}" for k in keys))
    return 0


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_USAGE)
        return 0 if argv else 2
    commands = {"train": _train, "eval": _eval}
    if argv[0] not in commands:
        raise UsageError(f"unknown detect command {argv[0]!r}; choose from train, eval")
    return commands[argv[0]](argv[1:])
