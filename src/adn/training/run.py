"""A training run's state and its files: the model, optimiser, schedule, EMA and scaler of a run (built from its
:class:`~adn.TrainConfig`), resuming it from a checkpoint (the schedule extended explicitly when ``--epochs``
grows), checkpoints with what inference needs, how many to keep, and the RNG state that makes a resume exact."""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import data as adn_data
from ..core.calibrate import clear_calibration
from ..core.checkpoint import checkpoint_arg, load_checkpoint, load_model_state, peek_checkpoint_args
from ..core.modules import convert_sync_batchnorm
from ..models.registry import create_model
from ..models.weights import load_weights
from ..runtime.distributed import DistState, is_main_process
from .config import TrainConfig
from .optim import build_ema, build_optimizer, build_scheduler, load_ema_state


def _log(*values) -> None:
    if is_main_process():
        print(*values, flush=True)


@dataclass
class Run:
    """Everything a training run holds: its (frozen) config and process group, and the state that changes."""

    config: TrainConfig
    dist: DistState
    device: torch.device
    model: nn.Module  # the DDP wrapper in a distributed run, else ``net``
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: Any
    scaler: Any
    meta: dict
    best: dict
    start_epoch: int = 0  #: the first epoch to run (set by :func:`resume`)
    #: the external teacher's weights file's SHA-256, derived from the config (a checkpoint's ``args`` record it)
    teacher_sha256: str | None = None


def _normalization(config: TrainConfig) -> tuple[list[float], list[float]]:
    if config.data.data_path is not None:
        return list(adn_data.IMAGENET_MEAN), list(adn_data.IMAGENET_STD)
    if config.data.dataset == "fashion-mnist":
        return list(adn_data.FASHION_MNIST_MEAN), list(adn_data.FASHION_MNIST_STD)
    return list(adn_data.DIGITS_MEAN), list(adn_data.DIGITS_STD)


def build_run(
    config: TrainConfig,
    dist: DistState,
    device: torch.device,
    classes: list[str],
    image_size: int,
    teacher_sha256: str | None = None,
) -> Run:
    """The run's model, optimiser, schedule, EMA and scaler; ``image_size``: the evaluation resolution (what
    inference preprocesses at, recorded in the metadata); ``teacher_sha256``: the external teacher's file hash."""
    ck, data, run = config.checkpoint, config.data, config.run
    model = create_model(config.model, num_classes=len(classes))
    if ck.weights:
        load_weights(model, ck.weights, weights_only=not ck.unsafe_pickle, model_name=config.model)
    if ck.pretrained:
        load_weights(model, ck.pretrained, weights_only=not ck.unsafe_pickle, model_name=config.model)
    if dist.distributed and run.sync_bn:
        model = convert_sync_batchnorm(model)
    model.to(device, memory_format=torch.channels_last if run.channels_last else torch.preserve_format)
    optimizer = build_optimizer(model, config.optim)
    fp16 = run.amp and device.type == "cuda" and run.amp_dtype != "bf16"
    mean, std = _normalization(config)
    meta = {
        "model": config.model,
        "num_classes": len(classes),
        "classes": classes,
        "input_size": image_size,
        "mean": mean,
        "std": std,
        "interpolation": data.interpolation,
        "val_resize_size": data.val_resize_size,
        "val_crop_size": image_size,
        "square_resize": data.data_path is None,
        "dataset": data.dataset if data.data_path is None else None,
    }
    ema = build_ema(model, config.optim, data.batch_size, dist.world_size, device) if config.optim.model_ema else None
    return Run(
        config,
        dist,
        device,
        model,
        model,
        optimizer,
        build_scheduler(optimizer, config.optim),
        ema,
        torch.amp.GradScaler("cuda") if fp16 else None,
        meta,
        {"epoch": None, "acc1": None},
        ck.start_epoch,
        teacher_sha256,
    )


def _require(checkpoint, keys, path: str) -> None:
    if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in keys):
        raise ValueError(
            f"{path} is not a training checkpoint (needs {', '.join(keys)}); use --weights to start from a weights file"
        )


def resume(run: Run) -> tuple[int, dict | None]:
    """Load the run's ``resume`` checkpoint: weights, optimiser, schedule (extended explicitly if ``epochs``
    grew), EMA, scaler; sets ``run.start_epoch`` and returns the step to start that epoch at and the RNG state to
    restore (mid-epoch resumes)."""
    config, path = run.config, run.config.checkpoint.resume
    checkpoint = load_checkpoint(path, weights_only=not config.checkpoint.unsafe_pickle)
    _require(checkpoint, ("model", "optimizer", "lr_scheduler", "epoch"), path)
    load_model_state(run.net, checkpoint, path, config.model)
    clear_calibration(run.net)  # training goes on: statistics calibrated for the old weights would go stale
    opt = checkpoint_arg(checkpoint, "opt")
    if isinstance(opt, str) and opt != config.optim.opt:  # another optimizer's state would fail at the first step
        raise ValueError(f"{path} was trained with --opt {opt}; resume it with --opt {opt}")
    try:
        run.optimizer.load_state_dict(checkpoint["optimizer"])
    except (ValueError, KeyError) as exc:
        raise ValueError(f"{path}: the optimizer state does not fit ({exc})") from None
    run.scheduler.load_state_dict(checkpoint["lr_scheduler"])
    run.start_epoch = checkpoint["epoch"] + 1
    _extend_schedule(run, checkpoint_arg(checkpoint, "epochs"))
    if run.ema is not None and checkpoint.get("model_ema") is not None:
        load_ema_state(run.ema, checkpoint["model_ema"])
        clear_calibration(run.ema.module)  # the final checkpoint's EMA is calibrated: stale once averaging resumes
    if run.scaler is not None and checkpoint.get("scaler") is not None:
        run.scaler.load_state_dict(checkpoint["scaler"])
    run.best = dict(checkpoint.get("best") or run.best)
    start_step, rng = 0, None
    position = checkpoint.get("position")  # saved on SIGTERM/SIGINT: mid-epoch
    if position is not None and position["epoch"] == run.start_epoch:
        start_step = int(position["step"])
        # rank 0's RNG states are saved; other ranks reseed (their data augmentation is seeded per sample)
        rng = checkpoint.get("rng") if not run.dist.distributed else None
    where = f"epoch {run.start_epoch}" + (f" step {start_step}" if start_step else "")
    restored = ", ".join(f"--{k.replace('_', '-')}" for k in config.checkpoint.restored) or "none"
    _log(f"resumed from {path} at {where}; the run's own arguments restored: {restored}")
    return start_step, rng


def _extend_schedule(run: Run, trained_epochs: Any) -> None:
    """``epochs`` larger than the run's: a schedule that spans the run (cosine) is recomputed for the new length
    and fast-forwarded to the resumed epoch; step schedules do not depend on it."""
    optim = run.config.optim
    if not isinstance(trained_epochs, int) or trained_epochs == optim.epochs:
        return
    if optim.lr_scheduler != "cosineannealinglr":
        _log(f"--epochs {trained_epochs} -> {optim.epochs}: the {optim.lr_scheduler} schedule continues unchanged")
        return
    for group in run.optimizer.param_groups:
        group["lr"] = group.get("initial_lr", group["lr"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "lr_scheduler.step() before optimizer.step()"
        run.scheduler = build_scheduler(run.optimizer, optim)
        for _ in range(run.start_epoch):
            run.scheduler.step()
    _log(
        f"--epochs {trained_epochs} -> {optim.epochs}: the cosine schedule now spans {optim.epochs} epochs "
        f"(lr at epoch {run.start_epoch}: {run.optimizer.param_groups[0]['lr']:.4g})"
    )


def resumed_config(path: str, **changes: Any) -> TrainConfig:
    """The config a checkpoint's run was made with (its ``args``), living where the file is now, with ``changes``
    by flag name (e.g. ``epochs=30`` to extend it): ``adn.fit(resumed_config(path, epochs=30))`` continues it."""
    stored = peek_checkpoint_args(path)
    if stored is None:
        raise ValueError(f"{path} holds no training arguments to resume from; start a new run with weights={path!r}")
    # the process group is this invocation's (torchrun's environment, or dist_world_size/dist_url given again)
    base = TrainConfig.from_flat({k: v for k, v in stored.items() if k not in ("dist_world_size", "dist_url")})
    return base.replace(output_dir=str(Path(path).parent), resume=str(path), **changes)


# --------------------------------------------------------------------------------------------- checkpoints
def make_checkpoint(run: Run, epoch: int, position: dict | None = None) -> dict:
    return {
        "model": run.net.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "lr_scheduler": run.scheduler.state_dict(),
        "epoch": epoch,
        "args": _flat_args(run),
        "model_ema": run.ema.state_dict() if run.ema is not None else None,
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "rng": _rng_state(),
        "position": position,
        "best": run.best,
        "meta": run.meta,
    }


def _flat_args(run: Run) -> dict[str, Any]:
    """A checkpoint's ``args``, the reference layout: flag name -> value, the process group's actual size and rank,
    and the teacher file's hash (what a resumed run checks its ``--teacher-weights`` against)."""
    args = {**run.config.flat(), **run.dist.flat()}
    if run.teacher_sha256 is not None:
        args["teacher_sha256"] = run.teacher_sha256
    return args


def prune_checkpoints(output_dir: Path, keep: str, best_epoch: int | None) -> None:
    """Keep the last ``keep`` ``model_<epoch>.pth`` files and the best epoch's ('all': keep every one)."""
    if keep == "all":
        return
    files = sorted(
        (p for p in output_dir.glob("model_*.pth") if p.stem[len("model_") :].isdigit()),
        key=lambda p: int(p.stem[len("model_") :]),
    )
    for path in files[: -int(keep)]:
        if path.stem != f"model_{best_epoch}":
            path.unlink(missing_ok=True)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Seed every RNG from (seed, epoch, rank) at the start of an epoch: an epoch that is re-run after a crash
    draws the same random numbers as in an uninterrupted run, whatever happened before."""
    epoch_seed = adn_data.sample_seed(seed, epoch, rank, -1 % 2**32)
    torch.manual_seed(epoch_seed)
    random.seed(epoch_seed)


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` trained: where its files are and the final sub-network table."""

    status: int  #: 0 when the run finished (or had finished); else it stopped early (a signal) and can resume
    output_dir: Path
    checkpoint: Path | None  #: the checkpoint to resume or evaluate (None if none was written)
    weights: Path | None  #: ``model.safetensors``, the final (calibrated) weights, once the run finished
    subnets: list[dict] = field(default_factory=list)  #: the final table: skip, GFLOPs, params, acc1 ...

    @property
    def finished(self) -> bool:
        return self.status == 0 and self.weights is not None


__all__ = [
    "FitResult",
    "Run",
    "build_run",
    "make_checkpoint",
    "prune_checkpoints",
    "resume",
    "resumed_config",
    "seed_epoch",
    "set_rng_state",
]
