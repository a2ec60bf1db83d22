"""``adn train`` / ``adn eval`` / ``train_adn.py``: self-distillation training of an adaptive-depth network
and evaluation of its sub-networks, with the torchvision classification reference's flags.

    adn train                                            # ResNet-20-ADN on the built-in digits, ~1 min on a CPU
    torchrun --nproc_per_node=4 train_adn.py --model resnet50 --data-path /data/imagenet ...
    adn eval --model resnet20 --resume output/resnet20/checkpoint.pth --all-subnets
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import io
import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Subset

from . import data as adn_data
from .checkpoint import (
    checkpoint_arg,
    load_checkpoint,
    load_model_state,
    load_state_dict_compat,
    load_weights,
    peek_checkpoint_arg,
    save_checkpoint,
    save_weights,
)
from .cli import UsageError
from .distributed import cleanup_distributed, get_rank, init_distributed_mode, is_main_process, reduce_sum
from .engine import evaluate, train_one_epoch
from .flops import count_flops, count_params
from .registry import create_model, list_models, model_info
from .skip import NORM_TYPES, convert_sync_batchnorm, format_skip, parse_skip, subnets
from .summary import format_table

#: torchvision reference defaults, used with ``--data-path`` for every flag the user did not set
REFERENCE_DEFAULTS = dict(
    batch_size=32,
    epochs=90,
    workers=min(16, os.cpu_count() or 1),
    lr=0.1,
    weight_decay=1e-4,
    lr_scheduler="steplr",
    lr_step_size=30,
    lr_gamma=0.1,
    print_freq=10,
)
#: built-in dataset preset (no ``--data-path``): trains ResNet-20-ADN in about a minute on 2 CPU cores
BUILTIN_PRESET = dict(
    batch_size=64,
    epochs=15,
    workers=0,
    lr=0.2,
    weight_decay=5e-4,
    lr_scheduler="cosineannealinglr",
    lr_step_size=5,
    lr_gamma=0.1,
    print_freq=10,
)
DEFAULT_MODEL = "resnet20"
DEFAULT_KD_TOPK = 500  # the reference's distillation: over the super-net's top-500 classes of each image
OPTIMIZERS = ("sgd", "sgd_nesterov", "rmsprop", "adamw")
SCHEDULERS = ("steplr", "multisteplr", "cosineannealinglr", "exponentiallr")
_QUIET = 10**9  # print_freq that silences per-step lines (the sub-network table says it all)
TRANSFORMER_EMBEDDING_KEYS = ("class_token", "position_embedding", "relative_position_bias_table")


# ------------------------------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``adn: error: ...``, exit status 2) instead of usage dumps."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def get_args_parser(prog: str = "adn train", test_only: bool = False) -> argparse.ArgumentParser:
    """The training/evaluation options. Defaults shown as ``None`` are filled in by :func:`resolve_args`:
    the built-in preset without ``--data-path``, the torchvision reference's values with it."""
    p = _Parser(prog=prog, description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("model and data")
    g.add_argument(
        "--model",
        default=None,
        help=f"model name: {', '.join(list_models())} (default: the one "
        f"the --resume/--weights checkpoint was trained as, else {DEFAULT_MODEL})",
    )
    g.add_argument(
        "--data-path",
        default=None,
        help="folder with train/ and val/ ImageFolder trees; "
        "omitted: the built-in dataset (8x8 handwritten digits bundled with scikit-learn)",
    )
    g.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    g.add_argument("-b", "--batch-size", type=int, default=None, help="images per process and step (64 built-in / 32)")
    g.add_argument("--epochs", type=int, default=None, help="total epochs (15 built-in / 90)")
    g.add_argument("-j", "--workers", type=int, default=None, help="data loading workers per process")
    g.add_argument("--interpolation", default="bilinear", choices=tuple(adn_data.INTERPOLATIONS))
    g.add_argument("--train-crop-size", type=int, default=None, help="training crop (default: the model's input size)")
    g.add_argument("--val-resize-size", type=int, default=None, help="validation resize (default: crop*256/224)")
    g.add_argument("--val-crop-size", type=int, default=None, help="validation crop (default: the model's input size)")
    g.add_argument("--auto-augment", default=None, choices=adn_data.AUTO_AUGMENT_POLICIES)
    g.add_argument("--ra-magnitude", type=int, default=9, help="RandAugment magnitude")
    g.add_argument("--augmix-severity", type=int, default=3, help="AugMix severity")
    g.add_argument("--random-erase", type=float, default=0.0, help="random erasing probability")
    g.add_argument("--mixup-alpha", type=float, default=0.0)
    g.add_argument("--cutmix-alpha", type=float, default=0.0)
    g.add_argument("--ra-sampler", action="store_true", help="repeated-augmentation sampler")
    g.add_argument("--ra-reps", type=int, default=3, help="repetitions of the repeated-augmentation sampler")
    g.add_argument(
        "--train-subset",
        type=int,
        default=None,
        metavar="N",
        help="train on the first N images only (tests, smoke runs)",
    )
    g.add_argument("--val-subset", type=int, default=None, metavar="N", help="evaluate on the first N images only")
    g.add_argument(
        "--max-steps", type=int, default=None, metavar="N", help="stop each epoch after N steps (tests, benchmarks)"
    )
    g.add_argument(
        "--bad-images",
        default="stop",
        choices=adn_data.BAD_IMAGE_POLICIES,
        help="an unreadable/corrupt image file: stop with its name, or skip it (reported on stderr)",
    )

    g = p.add_argument_group("optimisation")
    g.add_argument("--opt", default="sgd", choices=OPTIMIZERS)
    g.add_argument("--lr", type=float, default=None, help="learning rate (0.2 built-in / 0.1)")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument(
        "--wd",
        "--weight-decay",
        dest="weight_decay",
        type=float,
        default=None,
        help="weight decay (5e-4 built-in / 1e-4)",
    )
    g.add_argument("--norm-weight-decay", type=float, default=None, help="weight decay of norm layers (default: --wd)")
    g.add_argument("--bias-weight-decay", type=float, default=None, help="weight decay of biases (default: --wd)")
    g.add_argument(
        "--transformer-embedding-decay",
        type=float,
        default=None,
        help="weight decay of position embeddings/class tokens (default: --wd)",
    )
    g.add_argument("--label-smoothing", type=float, default=0.0)
    g.add_argument("--lr-scheduler", default=None, choices=SCHEDULERS, help="(cosineannealinglr built-in / steplr)")
    g.add_argument("--lr-warmup-epochs", type=int, default=0)
    g.add_argument("--lr-warmup-method", default="constant", choices=("constant", "linear"))
    g.add_argument("--lr-warmup-decay", type=float, default=0.01)
    g.add_argument("--lr-step-size", type=int, default=None, help="steplr: epochs between decays (30)")
    g.add_argument("--lr-multi-steps", type=int, nargs="+", default=None, help="multisteplr: milestone epochs")
    g.add_argument(
        "--lr-gamma", type=float, default=None, help="decay factor of steplr/multisteplr/exponentiallr (0.1)"
    )
    g.add_argument("--lr-min", type=float, default=0.0, help="cosineannealinglr's final learning rate")
    g.add_argument("--clip-grad-norm", type=float, default=None, help="clip the gradient norm to this value")
    g.add_argument("--amp", action="store_true", help="mixed precision: fp16 + GradScaler on CUDA, bf16 on CPU")
    g.add_argument("--sync-bn", action="store_true", help="synchronised batch norm across processes (CUDA)")
    g.add_argument(
        "--model-ema",
        action="store_true",
        help="keep an exponential moving average of the weights "
        "(evaluated after each epoch; with --test-only, evaluate the EMA weights)",
    )
    g.add_argument("--model-ema-steps", type=int, default=32, help="steps between EMA updates")
    g.add_argument("--model-ema-decay", type=float, default=0.99998, help="EMA decay per image-epoch (torchvision)")
    g.add_argument("--use-deterministic-algorithms", action="store_true")
    g.add_argument("--seed", type=int, default=0, help="random seed (model init, data order, augmentation)")

    g = p.add_argument_group("self-distillation")
    g.add_argument(
        "--subpath-alpha",
        type=float,
        default=0.5,
        help="alpha: weight of the super-net's CE; the base-net's distillation loss gets 1 - alpha",
    )
    g.add_argument("--subpath-temp", type=float, default=1.0, help="distillation temperature T")
    g.add_argument(
        "--kd-topk",
        type=int,
        default=None,
        help="distil over the super-net's top-k classes of each "
        "image (default: min(500, classes), the reference's: top-500 on ImageNet, all classes below 500)",
    )

    g = p.add_argument_group("checkpoints and output")
    g.add_argument(
        "--output-dir",
        default=None,
        help="where checkpoints and metrics.jsonl go (default: "
        "output/<model>, or output/<model>-2, -3 ... when that holds an earlier run)",
    )
    g.add_argument(
        "--resume",
        default=None,
        help="checkpoint to continue from (or to evaluate with --test-only); "
        "'auto': <output-dir>/checkpoint.pth if it exists (implied after a torchrun elastic restart)",
    )
    g.add_argument(
        "--weights",
        default=None,
        help="initial weights: a state dict (.pth or .safetensors), checkpoint or published ADN file",
    )
    g.add_argument(
        "--unsafe-pickle",
        action="store_true",
        help="allow checkpoints holding arbitrary pickled "
        "objects (legacy files); they can run code when loaded: only for files you trust",
    )
    g.add_argument("--start-epoch", type=int, default=0, metavar="N")
    g.add_argument("--print-freq", type=int, default=None, help="steps between progress lines (no terminal)")

    g = p.add_argument_group("evaluation")
    g.add_argument("--test-only", action="store_true", default=test_only, help="only evaluate (what `adn eval` does)")
    g.add_argument(
        "--skip-cfg",
        nargs="+",
        default=None,
        metavar="BOOL",
        help="sub-network to evaluate, one True/False per stage (True = skip), or e.g. TTFF",
    )
    g.add_argument("--all-subnets", action="store_true", help="evaluate every sub-network (table)")
    g.add_argument("--format", default="table", choices=("table", "csv", "json"), help="--all-subnets output format")
    g.add_argument("--output", default=None, metavar="FILE", help="also write the evaluation result to FILE")
    return p


def default_output_dir(model: str, latest: bool = False) -> str:
    """``output/<model>``, or the first of ``output/<model>-2``, ``-3`` ... without a checkpoint, so that running
    the same command again starts a new run beside the old one (an explicit ``--output-dir`` holding a checkpoint
    is refused instead). ``latest``: the newest run that has a checkpoint (what ``--resume auto`` continues)."""
    base = Path("output") / model
    path, previous, n = base, base, 1
    while (path / "checkpoint.pth").exists():
        previous, n = path, n + 1
        path = Path(f"{base}-{n}")
    return str(previous if latest else path)


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset flags from the built-in preset or the torchvision reference, then reject contradictions."""
    preset = BUILTIN_PRESET if args.data_path is None else REFERENCE_DEFAULTS
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.model is None:  # `adn eval --resume CKPT` needs no --model: a training checkpoint records its own
        path = args.weights if args.resume in (None, "auto") else args.resume
        trained_as = peek_checkpoint_arg(path, "model") if path else None
        args.model = trained_as if trained_as in list_models() else DEFAULT_MODEL
    model_info(args.model)  # unknown model -> ValueError listing the known ones
    # torchrun restarted the workers after a failure (--max-restarts): continue from the last checkpoint
    if args.resume is None and not args.test_only and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)) > 0:
        args.resume = "auto"
    if args.output_dir is None and not args.test_only:
        args.output_dir = default_output_dir(args.model, latest=args.resume == "auto")

    def bad(msg: str):
        raise UsageError(msg)

    try:
        device = torch.device(args.device)
    except RuntimeError:
        bad(f"--device {args.device!r} is not a device; use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        bad(f"--device {args.device}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        bad(f"--device {args.device}: this machine has {torch.cuda.device_count()} CUDA device(s); use cuda:0")
    if args.test_only:
        if args.resume is None and args.weights is None:
            bad("nothing to evaluate: give --resume CHECKPOINT or --weights FILE")
        if args.resume == "auto":
            bad("--resume auto continues training; to evaluate, give the checkpoint file: --resume PATH")
        if args.all_subnets and args.skip_cfg is not None:
            bad("--all-subnets evaluates every sub-network; drop --skip-cfg")
        for flag, value in (("--mixup-alpha", args.mixup_alpha), ("--cutmix-alpha", args.cutmix_alpha)):
            if value:
                bad(f"{flag} is a training augmentation; drop it with --test-only / adn eval")
    else:
        for flag, value in (
            ("--skip-cfg", args.skip_cfg),
            ("--all-subnets", args.all_subnets or None),
            ("--output", args.output),
        ):
            if value is not None:
                bad(f"{flag} applies to evaluation only: use `adn eval` or add --test-only")
        if args.format != "table":
            bad("--format applies to evaluation only: use `adn eval` or add --test-only")
    if args.resume is not None and args.weights is not None:
        bad("--resume and --weights both load the model; give one of them")
    if args.resume is not None and args.start_epoch and not args.test_only:
        bad(
            "--resume continues at the checkpoint's epoch; drop --start-epoch (or drop --resume and start from "
            "--weights at --start-epoch)"
        )
    if args.resume == "auto":
        auto = Path(args.output_dir) / "checkpoint.pth"
        args.resume = str(auto) if auto.is_file() else None
    elif not args.test_only and args.resume is None and (Path(args.output_dir) / "checkpoint.pth").exists():
        # a fresh run would overwrite the earlier run's checkpoints after its first epoch
        bad(
            f"{args.output_dir} already holds checkpoint.pth of an earlier run; continue it with --resume auto, "
            "or choose another --output-dir (or delete the old one)"
        )
    if not 0.0 <= args.subpath_alpha <= 1.0:
        bad(f"--subpath-alpha must be in [0, 1], got {args.subpath_alpha}")
    if args.subpath_temp <= 0:
        bad(f"--subpath-temp must be > 0, got {args.subpath_temp}")
    if args.kd_topk is not None and args.kd_topk < 1:
        bad(f"--kd-topk must be >= 1, got {args.kd_topk}")
    for name in ("batch_size", "epochs", "model_ema_steps", "print_freq"):
        if getattr(args, name) < 1:
            bad(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("train_subset", "val_subset", "max_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            bad(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.workers < 0:
        bad(f"--workers must be >= 0, got {args.workers}")
    if args.lr_scheduler == "multisteplr" and not args.lr_multi_steps:
        bad("--lr-scheduler multisteplr needs --lr-multi-steps EPOCH [EPOCH ...]")
    if args.lr_warmup_epochs < 0 or (args.lr_warmup_epochs and args.lr_warmup_epochs >= args.epochs):
        bad(f"--lr-warmup-epochs ({args.lr_warmup_epochs}) must be in [0, --epochs ({args.epochs}))")
    if args.start_epoch < 0 or (not args.test_only and args.resume is None and args.start_epoch >= args.epochs):
        bad(f"--start-epoch ({args.start_epoch}) must be in [0, --epochs ({args.epochs}))")
    if args.sync_bn and not str(args.device).startswith("cuda"):
        bad("--sync-bn needs CUDA devices (SyncBatchNorm does not run on the CPU)")
    return args


def _parse(argv: Sequence[str] | None, prog: str, test_only: bool) -> argparse.Namespace:
    args = get_args_parser(prog, test_only).parse_args(argv)
    return resolve_args(args)


# ------------------------------------------------------------------------------------------------ building
def set_weight_decay(model: nn.Module, args: argparse.Namespace) -> list[dict]:
    """Parameter groups: norm layers (skip-aware ones and their twins included), biases and transformer
    embeddings may get their own weight decay (torchvision reference semantics)."""
    groups: dict[float, list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            wd = args.weight_decay
            if isinstance(module, NORM_TYPES) and args.norm_weight_decay is not None:
                wd = args.norm_weight_decay
            if name == "bias" and args.bias_weight_decay is not None:
                wd = args.bias_weight_decay
            full = f"{module_name}.{name}" if module_name else name
            if args.transformer_embedding_decay is not None and any(k in full for k in TRANSFORMER_EMBEDDING_KEYS):
                wd = args.transformer_embedding_decay
            groups.setdefault(wd, []).append(param)
    return [{"params": params, "weight_decay": wd} for wd, params in groups.items()]


def build_optimizer(model: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    params = set_weight_decay(model, args)
    if args.opt.startswith("sgd"):
        return torch.optim.SGD(
            params,
            lr=args.lr,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
            nesterov=args.opt == "sgd_nesterov",
        )
    if args.opt == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay, eps=0.0316, alpha=0.9
        )
    return torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace):
    """Per-epoch schedule with optional warm-up, as in the torchvision reference."""
    S = torch.optim.lr_scheduler
    main_epochs = args.epochs - args.lr_warmup_epochs
    if args.lr_scheduler == "steplr":
        main = S.StepLR(optimizer, step_size=args.lr_step_size, gamma=args.lr_gamma)
    elif args.lr_scheduler == "multisteplr":
        main = S.MultiStepLR(optimizer, milestones=args.lr_multi_steps, gamma=args.lr_gamma)
    elif args.lr_scheduler == "cosineannealinglr":
        main = S.CosineAnnealingLR(optimizer, T_max=main_epochs, eta_min=args.lr_min)
    else:
        main = S.ExponentialLR(optimizer, gamma=args.lr_gamma)
    if args.lr_warmup_epochs == 0:
        return main
    if args.lr_warmup_method == "linear":
        warmup = S.LinearLR(optimizer, start_factor=args.lr_warmup_decay, total_iters=args.lr_warmup_epochs)
    else:
        warmup = S.ConstantLR(optimizer, factor=args.lr_warmup_decay, total_iters=args.lr_warmup_epochs)
    return S.SequentialLR(optimizer, schedulers=[warmup, main], milestones=[args.lr_warmup_epochs])


def build_ema(model: nn.Module, args: argparse.Namespace, device) -> AveragedModel:
    """EMA of weights and buffers; the decay is adjusted for batch size and update interval (torchvision)."""
    adjust = args.world_size * args.batch_size * args.model_ema_steps / args.epochs
    alpha = min(1.0, (1.0 - args.model_ema_decay) * adjust)
    return AveragedModel(model, device=device, multi_avg_fn=get_ema_multi_avg_fn(1.0 - alpha), use_buffers=True)


def load_ema_state(model_ema: AveragedModel, state: dict) -> None:
    """Load an EMA state dict (ours or a published one: ``module.<torchvision name>`` + ``n_averaged``)."""
    weights = {k: v for k, v in state.items() if k != "n_averaged"}
    load_state_dict_compat(model_ema.module, weights)
    if "n_averaged" in state:
        model_ema.n_averaged.copy_(state["n_averaged"])


def _image_size(args: argparse.Namespace) -> int:
    return model_info(args.model).input_size


def _subset(dataset, n: int | None):
    return dataset if n is None or n >= len(dataset) else Subset(dataset, range(n))


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Seed every RNG from (seed, epoch, rank) at the start of an epoch: an epoch that is re-run after a crash
    draws the same random numbers as in an uninterrupted run, whatever happened before."""
    epoch_seed = adn_data.sample_seed(seed, epoch, rank, -1 % 2**32)
    torch.manual_seed(epoch_seed)
    random.seed(epoch_seed)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _log(*values) -> None:
    if is_main_process():
        print(*values, flush=True)


# -------------------------------------------------------------------------------------- sub-network table
SUBNET_COLUMNS = [
    ("skip", "skip", "s"),
    ("gflops", "GFLOPs", ".4f"),
    ("params_m", "params(M)", ".3f"),
    ("acc1", "Acc@1", ".2f"),
    ("acc5", "Acc@5", ".2f"),
]


def evaluate_subnets(model: nn.Module, net: nn.Module, loader, device, resolution: int, print_freq: int) -> list[dict]:
    """Acc@1/Acc@5, GFLOPs (MACs, at ``resolution``) and parameters of every sub-network."""
    rows = []
    for skip in subnets(net):
        metrics = evaluate(model, loader, device, skip=skip, print_freq=print_freq, log_suffix=format_skip(skip))
        rows.append(
            {
                "skip": format_skip(skip),
                "gflops": count_flops(net, skip, resolution) / 1e9,
                "params_m": count_params(net, skip) / 1e6,
                "acc1": metrics["acc1"],
                "acc5": metrics["acc5"],
            }
        )
    return rows


def format_rows(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue().rstrip("\n")
    return format_table(rows, SUBNET_COLUMNS)


# --------------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None, *, prog: str = "adn train", test_only: bool = False) -> int:
    """Train (or with ``--test-only`` evaluate) as the torchvision classification reference does."""
    args = _parse(argv, prog, test_only)
    init_distributed_mode(args)
    try:
        return _run(args)
    finally:
        cleanup_distributed()


def eval_main(argv: Sequence[str] | None = None) -> int:
    """``adn eval``: ``adn train --test-only``."""
    return main(argv, prog="adn eval", test_only=True)


def _run(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    torch.manual_seed(args.seed + get_rank())
    random.seed(args.seed + get_rank())
    if args.use_deterministic_algorithms:
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    image_size = _image_size(args)
    if args.test_only:
        return _evaluate_only(args, device, image_size)

    # ---- data
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
    )
    train_set, val_set = _subset(train_set, args.train_subset), _subset(val_set, args.val_subset)
    if args.kd_topk is not None and args.kd_topk > num_classes:
        raise UsageError(
            f"--kd-topk {args.kd_topk} is more than the {num_classes} classes of the data; "
            f"use at most {num_classes} (or omit it: min(500, classes))"
        )
    if args.kd_topk is None:  # the reference distils over the super-net's top-500 classes
        args.kd_topk = min(DEFAULT_KD_TOPK, num_classes)
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
    train_set = adn_data.SeededDataset(train_set)
    collate = adn_data.mixup_cutmix_collate(num_classes, args.mixup_alpha, args.cutmix_alpha)
    pin = device.type == "cuda"
    train_loader = DataLoader(
        train_set,
        batch_size=args.batch_size,
        sampler=train_sampler,
        num_workers=args.workers,
        pin_memory=pin,
        collate_fn=collate,
        drop_last=len(train_set) >= 2 * args.batch_size,
        persistent_workers=args.workers > 0,
        worker_init_fn=_ignore_stop_signals,
    )
    val_loader = DataLoader(
        val_set,
        batch_size=args.batch_size,
        sampler=val_sampler,
        num_workers=args.workers,
        pin_memory=pin,
        persistent_workers=args.workers > 0,
    )
    source = args.data_path or adn_data.BUILTIN_NAME
    _log(f"data: {source}: {len(train_set)} train / {len(val_set)} val images, {num_classes} classes")
    if args.distributed and len(val_set) % args.world_size and is_main_process():
        # DistributedSampler pads every process to the same number of images (as torchvision's reference does)
        print(
            f"adn: warning: {len(val_set)} val images do not split evenly over {args.world_size} processes: the "
            f"per-epoch accuracies count {-len(val_set) % args.world_size} of them twice; `adn eval` on one process "
            "gives exact numbers",
            file=sys.stderr,
        )

    # ---- model, optimiser, schedule
    model = create_model(args.model, num_classes=num_classes)
    if args.weights:
        load_weights(model, args.weights, weights_only=not args.unsafe_pickle, model_name=args.model)
    if args.distributed and args.sync_bn:
        model = convert_sync_batchnorm(model)
    model.to(device)
    net = model
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    optimizer = build_optimizer(net, args)
    scaler = torch.amp.GradScaler("cuda") if args.amp and device.type == "cuda" else None
    lr_scheduler = build_scheduler(optimizer, args)
    model_ema = build_ema(net, args, device) if args.model_ema else None

    start_step, resume_rng = 0, None
    if args.resume:
        checkpoint = load_checkpoint(args.resume, weights_only=not args.unsafe_pickle)
        _require(checkpoint, ("model", "optimizer", "lr_scheduler", "epoch"), args.resume)
        load_model_state(net, checkpoint, args.resume, args.model)
        opt = checkpoint_arg(checkpoint, "opt")
        if isinstance(opt, str) and opt != args.opt:  # another optimizer's state would fail at the first step
            raise ValueError(f"{args.resume} was trained with --opt {opt}; resume it with --opt {opt}")
        try:
            optimizer.load_state_dict(checkpoint["optimizer"])
        except ValueError as exc:
            raise ValueError(f"{args.resume}: {exc}") from None
        lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
        args.start_epoch = checkpoint["epoch"] + 1
        if model_ema is not None and checkpoint.get("model_ema") is not None:
            load_ema_state(model_ema, checkpoint["model_ema"])
        if scaler is not None and checkpoint.get("scaler") is not None:
            scaler.load_state_dict(checkpoint["scaler"])
        position = checkpoint.get("position")  # saved on SIGTERM/SIGINT: mid-epoch
        if position is not None and position["epoch"] == args.start_epoch:
            start_step = int(position["step"])
            # rank 0's RNG states are saved; other ranks reseed (their data augmentation is seeded per sample)
            resume_rng = checkpoint.get("rng") if not args.distributed else None
        where = f"epoch {args.start_epoch}" + (f" step {start_step}" if start_step else "")
        _log(f"resumed from {args.resume} at {where}")
    if args.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[args.gpu] if args.gpu is not None else None
        )

    output_dir = Path(args.output_dir)
    if is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)
    _log(
        f"training {args.model}-ADN ({net.num_stages} stages, {sum(p.numel() for p in net.parameters()) / 1e6:.2f}M "
        f"params) for {args.epochs} epochs on {args.world_size} x {device.type}; "
        f"checkpoints and metrics.jsonl -> {output_dir}/"
    )

    def make_checkpoint(epoch: int, position: dict | None = None) -> dict:
        return {
            "model": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_scheduler.state_dict(),
            "epoch": epoch,
            "args": vars(args).copy(),
            "model_ema": model_ema.state_dict() if model_ema is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": _rng_state(),
            "position": position,
        }

    steps_per_epoch = min(len(train_loader), args.max_steps or len(train_loader))
    stop = _StopRequest()
    start_time = time.time()
    with stop.installed():
        for epoch in range(args.start_epoch, args.epochs):
            train_sampler.set_epoch(epoch)
            _seed_epoch(args.seed, epoch, get_rank())
            if epoch == args.start_epoch and start_step:
                train_sampler.skip(start_step * args.batch_size)  # consumed samples: not loaded again
                if resume_rng is not None:
                    _set_rng_state(resume_rng)
            lr = optimizer.param_groups[0]["lr"]
            try:
                stats = train_one_epoch(
                    model,
                    criterion,
                    optimizer,
                    train_loader,
                    device,
                    epoch,
                    args,
                    model_ema,
                    scaler,
                    start_step=start_step if epoch == args.start_epoch else 0,
                    should_stop=stop.requested,
                )
            except FloatingPointError as exc:
                last = output_dir / "checkpoint.pth"
                kept = f"; the last good checkpoint {last} is unchanged (--resume it)" if last.is_file() else ""
                raise FloatingPointError(f"{exc}; nothing was saved{kept}") from None
            next_step, interrupted = int(stats.pop("next_step")), stats.pop("interrupted")
            if interrupted and next_step < steps_per_epoch:
                if is_main_process():  # epoch - 1: the last complete epoch, as in the reference layout
                    save_checkpoint(
                        make_checkpoint(epoch - 1, {"epoch": epoch, "step": next_step}), output_dir / "checkpoint.pth"
                    )
                return stop.exit(f"at epoch {epoch} step {next_step}", output_dir / "checkpoint.pth")
            lr_scheduler.step()
            record = {"epoch": epoch, "lr": lr, **{f"train_{k}": v for k, v in stats.items()}}
            for name, skip in (("super", (False,) * net.num_stages), ("base", (True,) * net.num_stages)):
                m = evaluate(model, val_loader, device, skip=skip, print_freq=args.print_freq, log_suffix=name)
                record.update({f"{name}_acc1": m["acc1"], f"{name}_acc5": m["acc5"], f"{name}_loss": m["loss"]})
                if model_ema is not None:
                    m = evaluate(
                        model_ema, val_loader, device, skip=skip, print_freq=args.print_freq, log_suffix=f"EMA {name}"
                    )
                    record.update({f"ema_{name}_acc1": m["acc1"], f"ema_{name}_acc5": m["acc5"]})
            record["time_s"] = time.time() - start_time
            _log(
                f"epoch {epoch}: loss {stats['loss']:.4f} "
                f"(super {stats['loss_super']:.4f}, base {stats['loss_base']:.4f})  "
                f"super-net Acc@1 {record['super_acc1']:.2f}  base-net Acc@1 {record['base_acc1']:.2f}  "
                f"{stats['images_per_s']:.0f} img/s"
            )
            if is_main_process():
                checkpoint = make_checkpoint(epoch)
                save_checkpoint(checkpoint, output_dir / f"model_{epoch}.pth")
                save_checkpoint(checkpoint, output_dir / "checkpoint.pth")
                with open(output_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
            if _any_process(stop.requested(), device):
                return stop.exit(f"after epoch {epoch}", output_dir / "checkpoint.pth")

    elapsed = datetime.timedelta(seconds=int(time.time() - start_time))
    _log(f"training time {elapsed}")
    final = model_ema if model_ema is not None else model
    if is_main_process():  # the final (EMA) weights alone, pickle-free: adn eval --weights .../model.safetensors
        save_weights(model_ema.module if model_ema is not None else net, output_dir / "model.safetensors")
    rows = evaluate_subnets(final, net, val_loader, device, args.val_crop_size or image_size, _QUIET)
    _log(
        f"\nsub-networks of {args.model}-ADN{' (EMA weights)' if model_ema is not None else ''} "
        f"on {'the built-in val split' if args.data_path is None else args.data_path + '/val'} "
        f"(GFLOPs = MACs at {args.val_crop_size or image_size}px):"
    )
    _log(format_table(rows, SUBNET_COLUMNS))
    _log(f"\nevaluate again: adn eval --model {args.model} --resume {output_dir / 'checkpoint.pth'} --all-subnets")
    return 0


class _StopRequest:
    """SIGTERM/SIGINT handling during training: the signal only sets a flag; the current step finishes, a
    checkpoint is saved at that step boundary and ``exit`` returns 128 + the signal number (143 / 130). A second
    SIGINT aborts at once (KeyboardInterrupt), keeping the last saved checkpoint."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        if is_main_process():
            print(
                f"adn: {signal.Signals(signum).name} received: stopping after this step "
                "(saving a checkpoint; Ctrl-C again to abort now)",
                file=sys.stderr,
                flush=True,
            )

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():  # signal handlers need the main thread
            yield
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def exit(self, where: str, path: Path) -> int:
        assert self.signum is not None
        if is_main_process():
            print(
                f"adn: {signal.Signals(self.signum).name}: stopped {where}; checkpoint saved to {path}; "
                f"continue with --resume {path}",
                file=sys.stderr,
                flush=True,
            )
        return 128 + self.signum


def _any_process(flag: bool, device) -> bool:
    return reduce_sum([float(flag)], device)[0] > 0


def _ignore_stop_signals(worker_id: int) -> None:
    """Ctrl-C reaches the whole process group: DataLoader workers leave it to the main process, which stops at
    a step boundary. (SIGTERM stays fatal for workers: the DataLoader and multiprocessing stop them with it.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _require(checkpoint, keys: Sequence[str], path: str) -> None:
    if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in keys):
        raise ValueError(
            f"{path} is not a training checkpoint (needs {', '.join(keys)}); use --weights to start from a weights file"
        )


def _evaluate_only(args: argparse.Namespace, device: torch.device, image_size: int) -> int:
    loader, num_classes = adn_data.build_eval_loader(
        args.data_path,
        image_size=image_size,
        batch_size=args.batch_size,
        workers=args.workers,
        val_resize_size=args.val_resize_size,
        val_crop_size=args.val_crop_size,
        interpolation=args.interpolation,
        bad_images=args.bad_images,
    )
    if args.val_subset is not None or args.distributed:
        dataset = _subset(loader.dataset, args.val_subset)
        sampler = None
        if args.distributed:
            sampler = torch.utils.data.distributed.DistributedSampler(dataset, shuffle=False)
        loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers)
    model = create_model(args.model, num_classes=num_classes)
    path = args.resume or args.weights
    checkpoint = load_checkpoint(path, weights_only=not args.unsafe_pickle)
    if args.model_ema:
        if not isinstance(checkpoint, dict) or checkpoint.get("model_ema") is None:
            raise ValueError(f"{path} has no EMA weights ('model_ema'); drop --model-ema")
        ema = AveragedModel(model, use_buffers=True)
        load_ema_state(ema, checkpoint["model_ema"])
        model = ema.module
    else:
        load_model_state(model, checkpoint, path, args.model)
    model.to(device)
    resolution = args.val_crop_size or image_size
    what = f"{args.model}-ADN from {path}{' (EMA weights)' if args.model_ema else ''}"
    if args.all_subnets:
        rows = evaluate_subnets(model, model, loader, device, resolution, _QUIET)
        text = format_rows(rows, args.format)
        if args.format == "table":
            _log(f"sub-networks of {what} (GFLOPs = MACs at {resolution}px):")
        _log(text)
    else:
        skip = parse_skip(None if args.skip_cfg is None else " ".join(args.skip_cfg), model.num_stages)
        m = evaluate(model, loader, device, skip=skip, print_freq=args.print_freq, log_suffix=format_skip(skip))
        rows = [
            {
                "skip": format_skip(skip),
                "gflops": count_flops(model, skip, resolution) / 1e9,
                "params_m": count_params(model, skip) / 1e6,
                "acc1": m["acc1"],
                "acc5": m["acc5"],
            }
        ]
        text = format_rows(rows, args.format)
        if args.format == "table":
            text = (
                f"{what}, sub-network {rows[0]['skip']}: Acc@1 {m['acc1']:.3f}  Acc@5 {m['acc5']:.3f}  "
                f"({rows[0]['gflops']:.4f} GFLOPs, {rows[0]['params_m']:.3f}M params, {int(m['images'])} images)"
            )
        _log(text)
    if args.output and is_main_process():
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(format_rows(rows, args.format) + "\n")
    return 0


if __name__ == "__main__":
    from .cli import run_command

    argv = sys.argv[1:]
    sys.exit(run_command(main, [a for a in argv if a != "--debug"], debug="--debug" in argv))
