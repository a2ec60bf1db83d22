"""The training run behind ``adn train`` / ``train_adn.py`` / :func:`adn.fit`: data, model, resume, the epoch
loop, checkpoints, and the final table of every sub-network (as trained, then BatchNorm-calibrated). Everything
comes from one frozen :class:`~adn.training.config.TrainConfig`; the engine gets typed step options.
"""

from __future__ import annotations

import datetime
import json
import random
import time
from pathlib import Path

import torch
from torch import nn

from ..core.calibrate import calibrate
from ..core.checkpoint import peek_checkpoint, peek_checkpoint_arg, save_checkpoint, save_weights
from ..core.network import BATCH_NORM_TYPES
from ..data import TrainData, build_data, calibration_loader
from ..data.cache import dataset_index_cache, default_cache_dir
from ..errors import UsageError
from ..evaluation.evaluate import default_input_size, evaluate, evaluate_subnets, format_rows
from ..evaluation.metrics import interactive
from ..runtime.distributed import (
    DistState,
    cleanup_distributed,
    get_rank,
    init_distributed,
    is_main_process,
    reduce_sum,
)
from ..runtime.interrupt import StopRequest
from ..runtime.threads import AUTO, PROBE_SECONDS, TORCH_DEFAULT, apply_threads
from .config import DistillConfig, RunConfig, TrainConfig
from .engine import StepOptions, train_one_epoch
from .losses import DEFAULT_TOPK, SelfDistillation
from .run import (
    FitResult,
    Run,
    build_run,
    make_checkpoint,
    prune_checkpoints,
    resume,
    seed_epoch,
    set_rng_state,
)
from .teacher import file_sha256, make_distillation

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
QUIET = 10**9  # print_freq that silences progress reports


def fit(config: TrainConfig) -> FitResult:
    """Run ``config`` -- what ``adn train`` runs from its flags (:func:`adn.train_config` builds one the same
    way) -- in this process, or in the process group of torchrun's environment (or of srun tasks with
    ``dist_world_size``/``dist_url``). Returns what was trained (:class:`FitResult`)."""
    cfg = config.run
    dist = init_distributed(cfg.device, cfg.dist_world_size, cfg.dist_url)
    try:  # --cache-dataset: every ImageFolder scan of the run (train, val, calibration) goes through the cache
        with dataset_index_cache(default_cache_dir() if cfg.cache_dataset else None):
            status = _train(config, dist)
    finally:
        cleanup_distributed()
    out = Path(config.checkpoint.output_dir)
    weights = out / "model.safetensors"
    weights = weights if status == 0 and weights.is_file() else None
    subnets = (peek_checkpoint(weights) or {}).get("meta", {}).get("subnets", []) if weights is not None else []
    checkpoint = out / "checkpoint.pth"
    return FitResult(status, out, checkpoint if checkpoint.is_file() else None, weights, subnets)


def _log(*values) -> None:
    if is_main_process():
        print(*values, flush=True)


def _setup(run: RunConfig, dist: DistState) -> torch.device:
    device = torch.device(dist.device)
    apply_threads(run.threads)
    torch.manual_seed(run.seed + get_rank())
    random.seed(run.seed + get_rank())
    if run.use_deterministic_algorithms:
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def build_distillation(
    cfg: DistillConfig, num_classes: int, device: torch.device | str = "cpu", resume: str | None = None
) -> SelfDistillation:
    """The distillation of ``subpath_alpha``, ``subpath_temp``, ``kd_topk`` (default: the reference's top-500, at
    most ``num_classes``), ``fpn`` and ``teacher`` (:func:`adn.training.teacher.make_distillation`, the teacher on
    ``device``). ``resume``: the checkpoint a resumed run continues; its teacher file must be the one recorded."""
    if cfg.kd_topk is not None and cfg.kd_topk > num_classes:
        raise UsageError(
            f"--kd-topk {cfg.kd_topk} is more than the {num_classes} classes of the data; use at most "
            f"{num_classes} (or omit it: min({DEFAULT_TOPK}, classes))"
        )
    trained_with = peek_checkpoint_arg(resume, "teacher_sha256") if cfg.teacher and resume else None
    return make_distillation(
        num_classes,
        alpha=cfg.subpath_alpha,
        temperature=cfg.subpath_temp,
        topk=cfg.kd_topk,
        features=cfg.fpn,
        teacher=cfg.teacher,
        teacher_weights=cfg.teacher_weights,
        device=device,
        compile_teacher=cfg.compile,
        expected_sha256=trained_with if isinstance(trained_with, str) else None,
    )


def _step_options(config: TrainConfig) -> StepOptions:
    run = config.run
    return StepOptions(
        amp=run.amp,
        amp_dtype=AMP_DTYPES.get(run.amp_dtype),
        clip_grad_norm=config.optim.clip_grad_norm,
        ema_every=config.optim.model_ema_steps,
        ema_warmup_epochs=config.optim.lr_warmup_epochs,
        print_freq=QUIET if run.quiet else run.print_freq,
        max_steps=run.max_steps,
        channels_last=run.channels_last,
        progress=not run.quiet,
    )


def _validate(run: Run, val_loader, record: dict) -> None:
    """Super-net and base-net Acc@1/Acc@5 (and the EMA's) into ``record``."""
    n, cfg = run.net.num_stages, run.config.run
    for name, skip in (("super", (False,) * n), ("base", (True,) * n)):
        for prefix, model in (("", run.model), ("ema_", run.ema)):
            if model is None:
                continue
            m = evaluate(
                model,
                val_loader,
                run.device,
                skip=skip,
                print_freq=QUIET if cfg.quiet else cfg.print_freq,
                log_suffix=f"{prefix}{name}",
                channels_last=cfg.channels_last,
                progress=not cfg.quiet,
            )
            record.update({f"{prefix}{name}_acc1": m["acc1"], f"{prefix}{name}_acc5": m["acc5"]})
            if not prefix:
                record[f"{name}_loss"] = m["loss"]


def _train(config: TrainConfig, dist: DistState) -> int:
    device = _setup(config.run, dist)
    model_size = default_input_size(config.model)
    data = build_data(config.data, model_size, device, config.run.seed, dist, config.model)
    distill = build_distillation(config.distill, len(data.classes), device, config.checkpoint.resume)
    # what inference should preprocess at: the size validation ran at (the v2 recipe trains at 176, evaluates at 224)
    # checkpoints record an external teacher by its file's hash, never its weights
    sha = file_sha256(config.distill.teacher_weights) if config.distill.teacher is not None else None
    run = build_run(config, dist, device, data.classes, config.data.val_crop_size or model_size, teacher_sha256=sha)
    start_step, resume_rng = resume(run) if config.checkpoint.resume else (0, None)
    epochs = config.optim.epochs
    if run.start_epoch >= epochs:
        _log(f"the run has finished its {epochs} epochs; extend it with --epochs N")
        return 0
    if config.run.torch_compile:  # training and per-epoch evaluation; checkpoints keep run.net's names
        run.model = torch.compile(run.net)
    if dist.distributed:
        run.model = nn.parallel.DistributedDataParallel(
            run.model, device_ids=[dist.gpu] if dist.gpu is not None else None
        )
    output_dir = Path(config.checkpoint.output_dir)
    if is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)
    params = sum(p.numel() for p in run.net.parameters()) / 1e6
    pretrained, size = config.checkpoint.pretrained, config.data.train_crop_size or model_size
    what = f"fine-tuning {pretrained} into {config.model}-ADN" if pretrained else f"training {config.model}-ADN"
    threads = torch.get_num_threads()
    busy = ", the other cores busy with other work" if config.run.threads == AUTO and threads < TORCH_DEFAULT else ""
    cpu = f" ({threads} CPU thread{'s' * (threads > 1)}{busy})" if device.type == "cpu" else ""
    _log(
        f"{what} ({run.net.num_stages} stages, {params:.2f}M params) at {size}x{size} px for {epochs} epochs "
        f"on {dist.world_size} x {device.type}{cpu}; checkpoints, metrics.jsonl and metrics.png -> {output_dir}/"
    )
    start_time = time.time()
    status = _loop(run, data, distill, output_dir, start_step, resume_rng, start_time)
    if status is not None:
        return status
    _log(f"training time {datetime.timedelta(seconds=int(time.time() - start_time))}")
    return finish(run, data.val_loader, output_dir)


def _loop(run: Run, data: TrainData, distill, output_dir: Path, start_step: int, resume_rng, start_time) -> int | None:
    """The epochs from ``run.start_epoch``; the exit status when a stop request ended them early, else None."""
    config, stop = run.config, StopRequest()
    options, criterion = _step_options(config), nn.CrossEntropyLoss(label_smoothing=config.optim.label_smoothing)
    steps_per_epoch = min(len(data.train_loader), config.run.max_steps or len(data.train_loader))
    with stop.installed():
        for epoch in range(run.start_epoch, config.optim.epochs):
            data.train_sampler.set_epoch(epoch)
            seed_epoch(config.run.seed, epoch, get_rank())
            if config.run.threads == AUTO and epoch > run.start_epoch:
                _rethread(epoch, config.run.quiet)
            first = epoch == run.start_epoch and start_step
            if first:
                data.train_sampler.skip(start_step * config.data.batch_size)  # consumed samples: not loaded again
                if resume_rng is not None:
                    set_rng_state(resume_rng)
            try:
                result = train_one_epoch(
                    run.model,
                    distill,
                    criterion,
                    run.optimizer,
                    data.train_loader,
                    run.device,
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
                    position = {"epoch": epoch, "step": result.next_step}
                    save_checkpoint(make_checkpoint(run, epoch - 1, position), output_dir / "checkpoint.pth")
                return stop.exit(f"at epoch {epoch} step {result.next_step}", output_dir / "checkpoint.pth")
            _end_epoch(run, epoch, result, data.val_loader, output_dir, start_time)
            if reduce_sum([float(stop.requested())], run.device)[0] > 0:
                return stop.exit(f"after epoch {epoch}", output_dir / "checkpoint.pth")
    return None


def _rethread(epoch: int, quiet: bool) -> None:
    """``--threads auto``: follow the load of other processes, which may have started or stopped since."""
    before = torch.get_num_threads()
    now = apply_threads(AUTO, probe_seconds=PROBE_SECONDS / 4)  # short: it runs every epoch
    if now != before and not quiet:
        _log(f"epoch {epoch}: {now} CPU thread{'s' * (now > 1)} instead of {before} (other processes' load changed)")


def _end_epoch(run: Run, epoch: int, result, val_loader, output_dir: Path, start_time: float) -> None:
    """Schedule step, validation, the epoch's line, metrics and checkpoints."""
    run.scheduler.step()
    record = {"epoch": epoch, "lr": result.lr, **{f"train_{k}": v for k, v in result.metrics().items()}}
    _validate(run, val_loader, record)
    record["time_s"] = time.time() - start_time
    if run.best["acc1"] is None or record["super_acc1"] > run.best["acc1"]:
        run.best = {"epoch": epoch, "acc1": record["super_acc1"]}
    if not run.config.run.quiet:
        done, left = epoch + 1 - run.start_epoch, run.config.optim.epochs - epoch - 1
        eta = f", {datetime.timedelta(seconds=round(record['time_s'] / done * left))} left" if left else ""
        _log(
            f"epoch {epoch}: loss {result.loss:.4f} (alpha-weighted: super CE {result.loss_super:.4f} + base KD "
            f"{result.loss_base:.4f})  super-net Acc@1 {record['super_acc1']:.2f}  base-net Acc@1 "
            f"{record['base_acc1']:.2f}  {result.images_per_s:.0f} img/s{eta}"
        )
    if is_main_process():
        checkpoint = make_checkpoint(run, epoch)
        save_checkpoint(checkpoint, output_dir / f"model_{epoch}.pth")
        save_checkpoint(checkpoint, output_dir / "checkpoint.pth")
        prune_checkpoints(output_dir, run.config.checkpoint.keep_checkpoints, run.best["epoch"])
        with open(output_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        from ..evaluation.plots import plot_metrics

        plot_metrics(output_dir / "metrics.jsonl", output_dir / "metrics.png")


# ---------------------------------------------------------------------------------------------- the end
def finish(run: Run, val_loader, output_dir: Path) -> int:
    """The final sub-network table -- as trained, and after calibrating each sub-network's BatchNorm statistics
    -- then ``model.safetensors`` (the final weights, EMA ones with model_ema, calibrated) and a checkpoint that
    holds the calibration."""
    config, cfg = run.config, run.config.run
    final = run.ema.module if run.ema is not None else run.net
    resolution = config.data.val_crop_size or final.info.input_size
    rows = evaluate_subnets(
        final,
        val_loader,
        run.device,
        resolution,
        column="acc1_trained",
        channels_last=cfg.channels_last,
        progress=not cfg.quiet,
    )
    has_bn = any(isinstance(m, BATCH_NORM_TYPES) for m in final.modules())
    if cfg.calib_images and has_bn:
        start = time.time()
        loader = calibration_loader(config.data, default_input_size(config.model), cfg.calib_images, cfg.seed)
        calibrate(final, loader, batches=len(loader), progress=not cfg.quiet and interactive())
        _log(
            f"calibrated the BatchNorm statistics of {len(rows)} sub-networks on {len(loader.dataset)} training "
            f"images in {time.time() - start:.1f} s"
        )
        calibrated = evaluate_subnets(
            final, val_loader, run.device, resolution, channels_last=cfg.channels_last, progress=not cfg.quiet
        )
        for row, new in zip(rows, calibrated, strict=True):
            row.update(acc1=new["acc1"], acc5=new["acc5"])
    else:
        for row in rows:
            row["acc1"] = row.pop("acc1_trained")
    run.meta["subnets"] = rows
    where = "the built-in val split" if config.data.data_path is None else config.data.data_path + "/val"
    _log(
        f"\nsub-networks of {config.model}-ADN{' (EMA weights)' if run.ema is not None else ''} on {where} "
        f"(GFLOPs = MACs at {resolution}px):"
    )
    _log(format_rows(rows, "table", run.meta["num_classes"]))
    if is_main_process():  # the final weights alone, pickle-free: adn eval --weights .../model.safetensors
        save_weights(final, output_dir / "model.safetensors", meta=run.meta)
        save_checkpoint(make_checkpoint(run, config.optim.epochs - 1), output_dir / "checkpoint.pth")
    _log(f"\nevaluate again: adn eval --resume {output_dir / 'checkpoint.pth'} --all-subnets")
    return 0


#: the name this function had before it took a config
run_training = fit

__all__ = [
    "Run",
    "build_distillation",
    "build_run",
    "finish",
    "fit",
    "make_checkpoint",
    "prune_checkpoints",
    "resume",
    "run_training",
]
