"""Evaluating sub-networks: the table of every sub-network, and the evaluation run behind ``adn eval`` /
``train_adn.py --test-only``."""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from . import data as adn_data
from .distributed import cleanup_distributed, init_distributed_mode, is_main_process
from .engine import evaluate
from .flops import count_flops_table, count_params
from .loading import build_model
from .registry import is_converted_name, model_info
from .skipconfig import SkipLike, format_skip, parse_skip, subnets
from .summary import format_table

NO_PROGRESS = 10**9  # print_freq that silences per-batch reports


def default_input_size(name: str) -> int:
    """A model's input resolution before it is built (224 for converted torchvision/timm models)."""
    return 224 if is_converted_name(name) else model_info(name).input_size


def evaluate_subnets(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str,
    resolution: int | None = None,
    configs: Sequence[SkipLike] | None = None,
    channels_last: bool = False,
    column: str = "acc1",
) -> list[dict]:
    """Acc@1/Acc@5, GFLOPs (MACs at ``resolution``) and parameters of every sub-network (or of ``configs``).
    ``column``: the key the Acc@1 goes to (e.g. ``acc1_trained`` for a table of before and after calibration)."""
    net = getattr(model, "module", model)
    configs = [parse_skip(c, net.num_stages) for c in configs] if configs else subnets(net)
    rows = []
    for skip, flops in zip(configs, count_flops_table(net, configs, resolution), strict=True):
        metrics = evaluate(model, loader, device, skip=skip, print_freq=NO_PROGRESS, channels_last=channels_last)
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


def eval_loader(args: argparse.Namespace, image_size: int) -> tuple[DataLoader, int]:
    """The validation loader of ``args`` (``--val-subset``, distributed sampler) and the class count."""
    loader, num_classes = adn_data.build_eval_loader(
        args.data_path,
        image_size=image_size,
        batch_size=args.batch_size,
        workers=args.workers,
        val_resize_size=args.val_resize_size,
        val_crop_size=args.val_crop_size,
        interpolation=args.interpolation,
        bad_images=args.bad_images,
        **adn_data_kwargs(args),
    )
    if args.val_subset is not None or getattr(args, "distributed", False):
        dataset = loader.dataset
        if args.val_subset is not None and args.val_subset < len(dataset):
            dataset = Subset(dataset, range(args.val_subset))
        sampler = None
        if getattr(args, "distributed", False):
            sampler = torch.utils.data.distributed.DistributedSampler(dataset, shuffle=False)
        loader = DataLoader(
            dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers, pin_memory=loader.pin_memory
        )
    return loader, num_classes


def adn_data_kwargs(args: argparse.Namespace) -> dict:
    """The built-in dataset's choice, for the data builders."""
    return (
        {"dataset": args.dataset, "download": args.download} if getattr(args, "dataset", "digits") != "digits" else {}
    )


def run_evaluation(args: argparse.Namespace) -> int:
    """Evaluate one sub-network (``--skip-cfg``) or all of them (``--all-subnets``) of ``--resume``/``--weights``."""
    init_distributed_mode(args)
    try:
        return _evaluate(args)
    finally:
        cleanup_distributed()


def _evaluate(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    loader, num_classes = eval_loader(args, default_input_size(args.model))
    path = args.resume or args.weights
    model, _ = build_model(args.model, path, num_classes, ema=args.model_ema, unsafe_pickle=args.unsafe_pickle)
    if args.no_calibration:
        from .calibrate import clear_calibration

        clear_calibration(model)
    model.to(device)
    resolution = args.val_crop_size or model.info.input_size
    what = f"{args.model}-ADN from {path}{' (EMA weights)' if args.model_ema else ''}"
    if args.all_subnets:
        rows = evaluate_subnets(model, loader, device, resolution, channels_last=args.channels_last)
        if args.format == "table":
            _log(f"sub-networks of {what} (GFLOPs = MACs at {resolution}px):")
        _log(format_rows(rows, args.format, num_classes))
    else:
        skip = parse_skip(None if args.skip_cfg is None else " ".join(args.skip_cfg), model.num_stages)
        rows = evaluate_subnets(model, loader, device, resolution, [skip], channels_last=args.channels_last)
        row = rows[0]
        if args.format == "table":
            acc5 = f"  Acc@5 {row['acc5']:.3f}" if num_classes > 5 else ""
            _log(
                f"{what}, sub-network {row['skip']}: Acc@1 {row['acc1']:.3f}{acc5}  ({row['gflops']:.4f} GFLOPs, "
                f"{row['params_m']:.3f}M params, {len(loader.dataset)} images)"
            )
        else:
            _log(format_rows(rows, args.format, num_classes))
    if args.output and is_main_process():
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(format_rows(rows, args.format, num_classes) + "\n")
    return 0


__all__ = ["default_input_size", "eval_loader", "evaluate_subnets", "format_rows", "run_evaluation", "table_columns"]
