"""The training run behind ``adn train`` / ``train_adn.py``: data, model, resume, the epoch loop, checkpoints, and
the final table of every sub-network (as trained, then BatchNorm-calibrated). ``args`` are the resolved flags
(:mod:`adn.cli.train`), read as torchvision's classification reference reads them; the engine gets typed options.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from . import data as adn_data
from .calibrate import calibrate
from .checkpoint import peek_checkpoint_arg, save_checkpoint, save_weights
from .datacache import dataset_index_cache, default_cache_dir
from .distributed import cleanup_distributed, get_rank, init_distributed_mode, is_main_process, reduce_sum
from .engine import StepOptions, evaluate, train_one_epoch
from .errors import UsageError
from .evaluate import adn_data_kwargs, default_input_size, evaluate_subnets, format_rows
from .interrupt import StopRequest, ignore_stop_signals
from .losses import DEFAULT_TOPK, SelfDistillation
from .run import Run, build_run, make_checkpoint, prune_checkpoints, resume, seed_epoch, set_rng_state
from .skip import BATCH_NORM_TYPES
from .teacher import file_sha256, make_distillation

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
QUIET = 10**9  # print_freq that silences progress reports


def run_training(args: argparse.Namespace) -> int:
    init_distributed_mode(args)
    try:  # --cache-dataset: every ImageFolder scan of the run (train, val, calibration) goes through the cache
        with dataset_index_cache(default_cache_dir() if getattr(args, "cache_dataset", False) else None):
            return _train(args)
    finally:
        cleanup_distributed()


def _log(*values) -> None:
    if is_main_process():
        print(*values, flush=True)


def _setup(args: argparse.Namespace) -> torch.device:
    device = torch.device(args.device)
    torch.manual_seed(args.seed + get_rank())
    random.seed(args.seed + get_rank())
    if args.use_deterministic_algorithms:
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


# -------------------------------------------------------------------------------------------------- data
def _subset(dataset, n: int | None):
    return dataset if n is None or n >= len(dataset) else Subset(dataset, range(n))


def _classes(dataset) -> list[str]:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return list(getattr(dataset, "classes", []))


def build_distillation(args: argparse.Namespace, num_classes: int) -> SelfDistillation:
    """The distillation of ``--subpath-alpha``, ``--subpath-temp``, ``--kd-topk`` (default: the reference's
    top-500, at most ``num_classes``), ``--fpn`` and ``--teacher`` (:func:`adn.teacher.make_distillation`)."""
    teacher, resumed = getattr(args, "teacher", None), getattr(args, "resume", None)
    trained_with = peek_checkpoint_arg(resumed, "teacher_sha256") if teacher and resumed else None
    if teacher is not None:  # the checkpoint's args record the teacher's file hash, never its weights
        args.teacher_sha256 = file_sha256(args.teacher_weights)
    return make_distillation(
        num_classes,
        alpha=args.subpath_alpha,
        temperature=args.subpath_temp,
        topk=args.kd_topk,
        features=getattr(args, "fpn", False),
        teacher=teacher,
        teacher_weights=getattr(args, "teacher_weights", None),
        device=getattr(args, "device", "cpu"),
        compile_teacher=getattr(args, "compile", False),
        expected_sha256=trained_with,
    )


def build_data(args: argparse.Namespace, image_size: int, device: torch.device):
    """Train and val loaders (seeded per sample, resumable), the train sampler and the class names."""
    train_set, val_set, num_classes = adn_data.build_datasets(
        args.data_path,
        image_size=image_size,
        train_crop_size=args.train_crop_size,
        val_resize_size=args.val_resize_size,
        val_crop_size=args.val_crop_size,
        interpolation=args.interpolation,
        auto_augment=args.auto_augment,
        ra_magnitude=args.ra_magnitude,
        augmix_severity=args.augmix_severity,
        random_erase=args.random_erase,
        bad_images=args.bad_images,
        **adn_data_kwargs(args),
    )
    classes = _classes(train_set) or [str(i) for i in range(num_classes)]
    photo_size = _first_image_size(train_set) if args.data_path is not None else None
    train_set, val_set = _subset(train_set, args.train_subset), _subset(val_set, args.val_subset)
    train_sampler, val_sampler = adn_data.build_samplers(
        train_set,
        val_set,
        distributed=args.distributed,
        ra_sampler=args.ra_sampler,
        ra_reps=args.ra_reps,
        seed=args.seed,
    )
    # each sample's augmentation is seeded by its (seed, epoch, rank, position): reproducible after any restart
    train_sampler = adn_data.ResumableSampler(train_sampler, seed=args.seed, rank=get_rank())
    collate = adn_data.mixup_cutmix_collate(num_classes, args.mixup_alpha, args.cutmix_alpha)
    pin = device.type == "cuda"
    train_loader = DataLoader(
        adn_data.SeededDataset(train_set),
        batch_size=args.batch_size,
        sampler=train_sampler,
        num_workers=args.workers,
        pin_memory=pin,
        collate_fn=collate,
        drop_last=len(train_set) >= 2 * args.batch_size,
        persistent_workers=args.workers > 0,
        worker_init_fn=ignore_stop_signals,
        # its own generator: iter(loader) would otherwise draw from the global RNG, one draw off after a resume
        generator=torch.Generator().manual_seed(args.seed),
    )
    val_loader = DataLoader(
        val_set,
        batch_size=args.batch_size,
        sampler=val_sampler,
        num_workers=args.workers,
        pin_memory=pin,
        persistent_workers=args.workers > 0,
    )
    source = args.data_path or adn_data.BUILTIN_DATASETS[args.dataset]
    _log(f"data: {source}: {len(train_set)} train / {len(val_set)} val images, {num_classes} classes")
    if photo_size is not None and min(photo_size) > 2 * image_size and args.train_crop_size is None:
        _warn(
            f"{args.model} takes {image_size}x{image_size} px images: your photos are shrunk to that; for full-size "
            "images use e.g. --model resnet50 (224 px), or set --train-crop-size/--val-crop-size"
        )
    if args.distributed and len(val_set) % args.world_size:
        # DistributedSampler pads every process to the same number of images (as torchvision's reference does)
        _warn(
            f"{len(val_set)} val images do not split evenly over {args.world_size} processes: the per-epoch "
            f"accuracies count {-len(val_set) % args.world_size} of them twice; `adn eval` on one process gives "
            "exact numbers"
        )
    return train_loader, val_loader, train_sampler, classes


def _first_image_size(dataset) -> tuple[int, int] | None:
    """(width, height) of the dataset's first image, read from its header only; None when unknown or unreadable."""
    samples = getattr(dataset, "samples", None)
    if not samples:
        return None
    from PIL import Image

    try:
        with Image.open(samples[0][0]) as image:
            return image.size
    except Exception:  # an unreadable image is reported by the loader, with its fix
        return None


def _warn(message: str) -> None:
    if is_main_process():
        import sys

        print(f"adn: warning: {message}", file=sys.stderr, flush=True)


# -------------------------------------------------------------------------------------------------- loop
def _step_options(args: argparse.Namespace) -> StepOptions:
    return StepOptions(
        amp=args.amp,
        amp_dtype=AMP_DTYPES.get(args.amp_dtype),
        clip_grad_norm=args.clip_grad_norm,
        ema_every=args.model_ema_steps,
        ema_warmup_epochs=args.lr_warmup_epochs,
        print_freq=QUIET if args.quiet else args.print_freq,
        max_steps=args.max_steps,
        channels_last=args.channels_last,
    )


def _validate(run: Run, val_loader, record: dict) -> None:
    """Super-net and base-net Acc@1/Acc@5 (and the EMA's) into ``record``."""
    n = run.net.num_stages
    print_freq = QUIET if run.args.quiet else run.args.print_freq
    for name, skip in (("super", (False,) * n), ("base", (True,) * n)):
        for prefix, model in (("", run.model), ("ema_", run.ema)):
            if model is None:
                continue
            m = evaluate(
                model,
                val_loader,
                run.device,
                skip=skip,
                print_freq=print_freq,
                log_suffix=f"{prefix}{name}",
                channels_last=run.args.channels_last,
            )
            record.update({f"{prefix}{name}_acc1": m["acc1"], f"{prefix}{name}_acc5": m["acc5"]})
            if not prefix:
                record[f"{name}_loss"] = m["loss"]


def _train(args: argparse.Namespace) -> int:
    device = _setup(args)
    image_size = args.train_crop_size or default_input_size(args.model)
    train_loader, val_loader, train_sampler, classes = build_data(args, default_input_size(args.model), device)
    if args.kd_topk is not None and args.kd_topk > len(classes):
        raise UsageError(
            f"--kd-topk {args.kd_topk} is more than the {len(classes)} classes of the data; use at most "
            f"{len(classes)} (or omit it: min({DEFAULT_TOPK}, classes))"
        )
    distill = build_distillation(args, len(classes))
    run = build_run(args, device, classes, image_size)
    start_step, resume_rng = resume(run) if args.resume else (0, None)
    if args.start_epoch >= args.epochs:
        _log(f"the run has finished its {args.epochs} epochs; extend it with --epochs N")
        return 0
    if getattr(args, "torch_compile", False):  # training and per-epoch evaluation; checkpoints keep run.net's names
        run.model = torch.compile(run.net)
    if args.distributed:
        run.model = torch.nn.parallel.DistributedDataParallel(
            run.model, device_ids=[args.gpu] if args.gpu is not None else None
        )
    output_dir = Path(args.output_dir)
    if is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)
    params = sum(p.numel() for p in run.net.parameters()) / 1e6
    pretrained = getattr(args, "pretrained", None)
    what = f"fine-tuning {pretrained} into {args.model}-ADN" if pretrained else f"training {args.model}-ADN"
    _log(
        f"{what} ({run.net.num_stages} stages, {params:.2f}M params) at {image_size}x{image_size} "
        f"px for {args.epochs} epochs on {args.world_size} x {device.type}; checkpoints, metrics.jsonl and "
        f"metrics.png -> {output_dir}/"
    )
    options, stop = _step_options(args), StopRequest()
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    steps_per_epoch = min(len(train_loader), args.max_steps or len(train_loader))
    start_time = time.time()
    with stop.installed():
        for epoch in range(args.start_epoch, args.epochs):
            train_sampler.set_epoch(epoch)
            seed_epoch(args.seed, epoch, get_rank())
            first = epoch == args.start_epoch and start_step
            if first:
                train_sampler.skip(start_step * args.batch_size)  # consumed samples: not loaded again
                if resume_rng is not None:
                    set_rng_state(resume_rng)
            try:
                result = train_one_epoch(
                    run.model,
                    distill,
                    criterion,
                    run.optimizer,
                    train_loader,
                    device,
                    epoch,
                    options,
                    run.ema,
                    run.scaler,
                    start_step=start_step if first else 0,
                    should_stop=stop.requested,
                )
            except FloatingPointError as exc:
                last = output_dir / "checkpoint.pth"
                kept = f"; the last good checkpoint {last} is unchanged (--resume it)" if last.is_file() else ""
                raise FloatingPointError(f"{exc}; nothing was saved{kept}") from None
            if result.interrupted and result.next_step < steps_per_epoch:
                if is_main_process():  # epoch - 1: the last complete epoch, as in the reference layout
                    save_checkpoint(
                        make_checkpoint(run, epoch - 1, {"epoch": epoch, "step": result.next_step}),
                        output_dir / "checkpoint.pth",
                    )
                return stop.exit(f"at epoch {epoch} step {result.next_step}", output_dir / "checkpoint.pth")
            _end_epoch(run, epoch, result, val_loader, output_dir, start_time)
            if reduce_sum([float(stop.requested())], device)[0] > 0:
                return stop.exit(f"after epoch {epoch}", output_dir / "checkpoint.pth")
    _log(f"training time {datetime.timedelta(seconds=int(time.time() - start_time))}")
    return finish(run, val_loader, output_dir)


def _end_epoch(run: Run, epoch: int, result, val_loader, output_dir: Path, start_time: float) -> None:
    """Schedule step, validation, the epoch's line, metrics and checkpoints."""
    run.scheduler.step()
    record = {"epoch": epoch, "lr": result.lr, **{f"train_{k}": v for k, v in result.metrics().items()}}
    _validate(run, val_loader, record)
    record["time_s"] = time.time() - start_time
    if run.best["acc1"] is None or record["super_acc1"] > run.best["acc1"]:
        run.best = {"epoch": epoch, "acc1": record["super_acc1"]}
    if not run.args.quiet:
        _log(
            f"epoch {epoch}: loss {result.loss:.4f} (alpha-weighted: super CE {result.loss_super:.4f} + base KD "
            f"{result.loss_base:.4f})  super-net Acc@1 {record['super_acc1']:.2f}  base-net Acc@1 "
            f"{record['base_acc1']:.2f}  {result.images_per_s:.0f} img/s"
        )
    if is_main_process():
        checkpoint = make_checkpoint(run, epoch)
        save_checkpoint(checkpoint, output_dir / f"model_{epoch}.pth")
        save_checkpoint(checkpoint, output_dir / "checkpoint.pth")
        prune_checkpoints(output_dir, run.args.keep_checkpoints, run.best["epoch"])
        with open(output_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        from .plots import plot_metrics

        plot_metrics(output_dir / "metrics.jsonl", output_dir / "metrics.png")


# ---------------------------------------------------------------------------------------------- the end
def calibration_loader(args: argparse.Namespace, image_size: int) -> DataLoader:
    """Training images with the evaluation transform (no augmentation), ``--calib-images`` of them spread over the
    whole training set, for BatchNorm calibration."""
    dataset = adn_data.build_calibration_set(
        args.data_path,
        image_size=image_size,
        val_resize_size=args.val_resize_size,
        val_crop_size=args.val_crop_size,
        interpolation=args.interpolation,
        bad_images=args.bad_images,
        **adn_data_kwargs(args),
    )
    dataset = _subset(dataset, args.train_subset)
    generator = torch.Generator().manual_seed(args.seed)
    chosen = torch.randperm(len(dataset), generator=generator)[: args.calib_images].tolist()
    return DataLoader(Subset(dataset, sorted(chosen)), batch_size=args.batch_size, num_workers=args.workers)


def finish(run: Run, val_loader, output_dir: Path) -> int:
    """The final sub-network table -- as trained, and after calibrating each sub-network's BatchNorm statistics
    -- then ``model.safetensors`` (the final weights, EMA ones with --model-ema, calibrated) and a checkpoint that
    holds the calibration."""
    args = run.args
    final = run.ema.module if run.ema is not None else run.net
    resolution = args.val_crop_size or final.info.input_size
    rows = evaluate_subnets(
        final, val_loader, run.device, resolution, column="acc1_trained", channels_last=args.channels_last
    )
    has_bn = any(isinstance(m, BATCH_NORM_TYPES) for m in final.modules())
    if args.calib_images and has_bn:
        start = time.time()
        loader = calibration_loader(args, default_input_size(args.model))
        calibrate(final, loader, batches=len(loader), progress=not args.quiet and is_main_process())
        _log(
            f"calibrated the BatchNorm statistics of {len(rows)} sub-networks on {len(loader.dataset)} training "
            f"images in {time.time() - start:.1f} s"
        )
        calibrated = evaluate_subnets(final, val_loader, run.device, resolution, channels_last=args.channels_last)
        for row, new in zip(rows, calibrated, strict=True):
            row.update(acc1=new["acc1"], acc5=new["acc5"])
    else:
        for row in rows:
            row["acc1"] = row.pop("acc1_trained")
    run.meta["subnets"] = rows
    where = "the built-in val split" if args.data_path is None else args.data_path + "/val"
    _log(
        f"\nsub-networks of {args.model}-ADN{' (EMA weights)' if run.ema is not None else ''} on {where} "
        f"(GFLOPs = MACs at {resolution}px):"
    )
    _log(format_rows(rows, "table", run.meta["num_classes"]))
    if is_main_process():  # the final weights alone, pickle-free: adn eval --weights .../model.safetensors
        save_weights(final, output_dir / "model.safetensors", meta=run.meta)
        save_checkpoint(make_checkpoint(run, args.epochs - 1), output_dir / "checkpoint.pth")
    _log(f"\nevaluate again: adn eval --resume {output_dir / 'checkpoint.pth'} --all-subnets")
    return 0


__all__ = [
    "Run",
    "build_data",
    "build_distillation",
    "build_run",
    "calibration_loader",
    "finish",
    "make_checkpoint",
    "prune_checkpoints",
    "resume",
    "run_training",
]
