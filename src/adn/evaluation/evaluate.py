"""Evaluating sub-networks: the table of every sub-network, and the evaluation run behind ``adn eval`` /
``train_adn.py --test-only`` (from an :class:`~adn.training.config.EvalConfig`)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.flops import count_flops_table, count_params
from ..core.modules import unwrap
from ..core.skipconfig import SkipLike, format_skip, parse_skip, skip_configs
from ..data import eval_loader
from ..models.loading import build_model
from ..models.registry import is_converted_name, model_info
from ..runtime.distributed import DistState, cleanup_distributed, init_distributed, is_main_process, reduce_sum
from ..training.config import EvalConfig
from .metrics import Progress, correct_topk, track
from .summary import format_table

NO_PROGRESS = 10**9  # print_freq that silences per-batch reports


def default_input_size(name: str) -> int:
    """A model's input resolution before it is built (224 for converted torchvision/timm models)."""
    return 224 if is_converted_name(name) else model_info(name).input_size


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str,
    skip: SkipLike = None,
    print_freq: int = 100,
    log_suffix: str = "",
    channels_last: bool = False,
    progress: bool = True,
) -> dict[str, float]:
    """Evaluate sub-network ``skip`` (default: the model's current ``skip``, the super-net unless set).

    Returns ``{"acc1", "acc5", "loss", "images"}``: accuracies in percent and the mean cross-entropy, summed over
    all processes of a distributed run. One host synchronisation per report, none per batch. ``progress``: a
    bar on an interactive terminal (:class:`~adn.evaluation.metrics.Progress`).
    """
    model.eval()
    net = unwrap(model)
    net = getattr(net, "module", net)  # AveragedModel (EMA) keeps the network in .module
    skip = net.resolve_skip(skip)
    device = torch.device(device)
    total = len(loader) if hasattr(loader, "__len__") else None
    progress = Progress(f"Test {log_suffix}".strip(), total, progress)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, correct@1, correct@5, images
    try:
        for i, (image, target) in enumerate(loader):
            image, target = image.to(device, non_blocking=True), target.to(device, non_blocking=True)
            if channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            output = model(image, skip=skip).float()
            c1, c5 = correct_topk(output, target, (1, 5))
            loss = F.cross_entropy(output, target, reduction="sum").double()
            sums += torch.stack([loss, c1, c5, loss.new_tensor(float(image.shape[0]))])
            progress.step()
            if (i + 1) % print_freq == 0:
                s = sums.tolist()
                progress.report(i + 1, f"acc1 {100 * s[1] / s[3]:.2f}  acc5 {100 * s[2] / s[3]:.2f}")
    finally:
        progress.close()
    total_loss, correct1, correct5, count = reduce_sum(sums.tolist(), device)
    if count == 0:
        raise ValueError("the evaluation set is empty")
    return {"acc1": 100 * correct1 / count, "acc5": 100 * correct5 / count, "loss": total_loss / count, "images": count}


def evaluate_subnets(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str,
    resolution: int | None = None,
    configs: Sequence[SkipLike] | None = None,
    channels_last: bool = False,
    column: str = "acc1",
    progress: bool = False,
) -> list[dict]:
    """Acc@1/Acc@5, GFLOPs (MACs at ``resolution``) and parameters of every sub-network (or of ``configs``).
    ``column``: the key the Acc@1 goes to (e.g. ``acc1_trained`` for a table of before and after calibration);
    ``progress``: a bar over the sub-networks, with an ETA, on an interactive terminal."""
    net = getattr(model, "module", model)
    configs = [parse_skip(c, net.num_stages) for c in configs] if configs else skip_configs(net)
    rows = []
    pairs = zip(configs, count_flops_table(net, configs, resolution), strict=True)
    for skip, flops in track(list(pairs), "evaluating sub-networks", "net", progress):
        metrics = evaluate(
            model, loader, device, skip=skip, print_freq=NO_PROGRESS, channels_last=channels_last, progress=progress
        )
        rows.append(
            {
                "skip": format_skip(skip),
                "gflops": flops / 1e9,
                "params_m": count_params(net, skip) / 1e6,
                column: metrics["acc1"],
                "acc5": metrics["acc5"],
            }
        )
    return rows


def table_columns(rows: list[dict], num_classes: int | None = None) -> list[tuple[str, str, str]]:
    """Columns of a sub-network table: Acc@5 only with more than 5 classes (else it is always 100 %)."""
    columns = [("skip", "skip", "s"), ("gflops", "GFLOPs", ".4f"), ("params_m", "params(M)", ".3f")]
    if rows and "acc1_trained" in rows[0]:
        columns.append(("acc1_trained", "Acc@1 as trained", ".2f"))
    if rows and "acc1" in rows[0]:
        columns.append(("acc1", "Acc@1 calibrated" if "acc1_trained" in rows[0] else "Acc@1", ".2f"))
    if rows and "acc5" in rows[0] and (num_classes is None or num_classes > 5):
        columns.append(("acc5", "Acc@5", ".2f"))
    return columns


def format_rows(rows: list[dict], fmt: str = "table", num_classes: int | None = None) -> str:
    """``table`` (aligned text), ``csv`` or ``json``."""
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue().rstrip("\n")
    return format_table(rows, table_columns(rows, num_classes))


def _log(*values) -> None:
    if is_main_process():
        print(*values, flush=True)


def run_evaluation(config: EvalConfig) -> int:
    """Evaluate one sub-network (``skip_cfg``) or all of them (``all_subnets``) of the config's file."""
    dist = init_distributed(config.device)
    try:
        return _evaluate(config, dist)
    finally:
        cleanup_distributed()


def _evaluate(config: EvalConfig, dist: DistState) -> int:
    device = torch.device(dist.device)
    loader, num_classes = eval_loader(config.data, default_input_size(config.model), dist.distributed)
    model, _ = build_model(
        config.model, config.source, num_classes, ema=config.model_ema, unsafe_pickle=config.unsafe_pickle
    )
    if config.no_calibration:
        from ..core.calibrate import clear_calibration

        clear_calibration(model)
    model.to(device)
    resolution = config.data.val_crop_size or model.info.input_size
    what = f"{config.model}-ADN from {config.source}{' (EMA weights)' if config.model_ema else ''}"
    fmt = config.format
    if config.all_subnets:
        rows = evaluate_subnets(
            model, loader, device, resolution, channels_last=config.channels_last, progress=not config.quiet
        )
        if fmt == "table":
            _log(f"sub-networks of {what} (GFLOPs = MACs at {resolution}px):")
        _log(format_rows(rows, fmt, num_classes))
    else:
        skip = model.resolve_skip(config.skip_cfg)
        rows = evaluate_subnets(
            model, loader, device, resolution, [skip], channels_last=config.channels_last, progress=not config.quiet
        )
        row = rows[0]
        if fmt == "table":
            acc5 = f"  Acc@5 {row['acc5']:.3f}" if num_classes > 5 else ""
            _log(
                f"{what}, sub-network {row['skip']}: Acc@1 {row['acc1']:.3f}{acc5}  ({row['gflops']:.4f} GFLOPs, "
                f"{row['params_m']:.3f}M params, {len(loader.dataset)} images)"
            )
        else:
            _log(format_rows(rows, fmt, num_classes))
    if config.output and is_main_process():
        Path(config.output).parent.mkdir(parents=True, exist_ok=True)
        Path(config.output).write_text(format_rows(rows, fmt, num_classes) + "\n")
    return 0


__all__ = ["default_input_size", "evaluate", "evaluate_subnets", "format_rows", "run_evaluation", "table_columns"]
