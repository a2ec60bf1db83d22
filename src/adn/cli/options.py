"""Flags shared by the subcommands: one parser class (one-line errors), one help style, one set of groups.

Each subcommand builds its parser from the groups it needs, so ``adn eval --help`` shows evaluation flags
only. Defaults that depend on the data (the built-in preset vs the torchvision reference) are resolved later
(:mod:`adn.cli.train`); their help says so and no ``(default: None)`` is printed.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import fields

import torch

from ..data.config import DATASETS, DataConfig
from ..data.folder import BAD_IMAGE_POLICIES
from ..data.presets import AUTO_AUGMENT_POLICIES
from ..data.presets import INTERPOLATIONS as _INTERPOLATIONS
from ..errors import UsageError
from ..models.registry import list_models
from .parser import HelpFormatter, Parser, explicit_dests  # noqa: F401  (re-exported)

INTERPOLATIONS = tuple(_INTERPOLATIONS)  # one list of each choice: the library's, which validates them too
DEFAULT_MODEL = "resnet20"


# ------------------------------------------------------------------------------------------------ groups
def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=None,
        help=f"registered model ({', '.join(list_models())}) or a converted "
        "torchvision/timm model (tv:NAME, timm:NAME); default: the architecture the --resume/--weights "
        f"checkpoint was trained as, else {DEFAULT_MODEL}",
    )
    add_device_arg(g)


def add_device_arg(g: argparse._ActionsContainer, default: str | None = None) -> None:
    """``--device``, the same in every command; ``default`` None: CUDA when available, resolved later."""
    more = " (default: cuda when available)" if default is None else ""
    g.add_argument("--device", default=default, help=f"cpu, cuda or cuda:N{more}")


def add_dataset_arg(g: argparse._ActionsContainer, default: str | None = "digits", help: str | None = None) -> None:
    """``--dataset``: one of the built-in datasets (:data:`DATASETS`), the same choices in every command."""
    g.add_argument(
        "--dataset",
        default=default,
        choices=DATASETS,
        help=help
        or "built-in dataset used without --data-path: digits (8x8 handwritten digits bundled with scikit-learn) "
        "or fashion-mnist",
    )


def add_data_args(p: argparse.ArgumentParser, train: bool) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--data-path",
        default=None,
        help="folder with train/ and val/ ImageFolder trees (ILSVRC-2012 "
        "layout); omitted: a built-in dataset (--dataset)",
    )
    add_dataset_arg(g)
    g.add_argument(
        "--download", action="store_true", help="fashion-mnist: let torchvision download it when no local copy is found"
    )
    g.add_argument(
        "-b",
        "--batch-size",
        type=int,
        default=None,
        help="images per process and step (default: 64 built-in, 32 with --data-path)",
    )
    g.add_argument(
        "-j",
        "--workers",
        type=int,
        default=None,
        help="data loading worker processes (default: 0 built-in, min(16, cores) with --data-path)",
    )
    g.add_argument("--interpolation", default="bilinear", choices=INTERPOLATIONS, help="resize interpolation")
    if train:
        g.add_argument(
            "--train-crop-size", type=int, default=None, help="training crop (default: the model's input size)"
        )
    g.add_argument("--val-resize-size", type=int, default=None, help="evaluation resize (default: crop * 256/224)")
    g.add_argument("--val-crop-size", type=int, default=None, help="evaluation crop (default: the model's input size)")
    if train:
        g.add_argument(
            "--train-subset", type=int, default=None, metavar="N", help="train on the first N images only (smoke runs)"
        )
    g.add_argument("--val-subset", type=int, default=None, metavar="N", help="evaluate on the first N images only")
    g.add_argument(
        "--bad-images",
        default="stop",
        choices=BAD_IMAGE_POLICIES,
        help="an unreadable image file: stop with its name, or skip it (reported on stderr)",
    )


def add_augment_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("augmentation (training)")
    g.add_argument(
        "--auto-augment",
        default=None,
        choices=AUTO_AUGMENT_POLICIES,
        help="automatic augmentation policy (default: none)",
    )
    g.add_argument("--ra-magnitude", type=int, default=9, help="RandAugment magnitude")
    g.add_argument("--augmix-severity", type=int, default=3, help="AugMix severity")
    g.add_argument("--random-erase", type=float, default=0.0, help="random erasing probability")
    g.add_argument("--mixup-alpha", type=float, default=0.0, help="MixUp alpha (0: off)")
    g.add_argument("--cutmix-alpha", type=float, default=0.0, help="CutMix alpha (0: off)")
    g.add_argument("--ra-sampler", action="store_true", help="repeated-augmentation sampler")
    g.add_argument("--ra-reps", type=int, default=3, help="repetitions of the repeated-augmentation sampler")


def add_optim_args(p: argparse.ArgumentParser) -> None:
    """Optimisation and self-distillation flags (``adn train``): the torchvision reference's and the reference ADN
    code's."""
    from ..training.config import OPTIMIZERS, SCHEDULERS

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=None, help="total epochs (default: 15 built-in, 90 with --data-path)")
    g.add_argument("--opt", default="sgd", choices=OPTIMIZERS, help="optimiser")
    g.add_argument("--lr", type=float, default=None, help="learning rate (default: 0.2 built-in, 0.1 with --data-path)")
    g.add_argument("--momentum", type=float, default=0.9, help="momentum of SGD/RMSprop")
    g.add_argument(
        "--wd",
        "--weight-decay",
        dest="weight_decay",
        type=float,
        default=None,
        help="weight decay (default: 5e-4 built-in, 1e-4 with --data-path)",
    )
    g.add_argument("--norm-weight-decay", type=float, default=None, help="weight decay of norm layers (default: --wd)")
    g.add_argument("--bias-weight-decay", type=float, default=None, help="weight decay of biases (default: --wd)")
    g.add_argument(
        "--transformer-embedding-decay",
        type=float,
        default=None,
        help="weight decay of position embeddings, class tokens and relative position biases (default: --wd)",
    )
    g.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing of the super-net's CE")
    g.add_argument(
        "--lr-scheduler",
        default=None,
        choices=SCHEDULERS,
        help="per-epoch schedule (default: cosineannealinglr built-in, steplr with --data-path)",
    )
    g.add_argument(
        "--lr-warmup-epochs",
        type=int,
        default=None,
        help="warm-up epochs (default: 2 built-in, at most --epochs/5; 0 with --data-path)",
    )
    g.add_argument(
        "--lr-warmup-method",
        default=None,
        choices=("constant", "linear"),
        help="warm-up shape (default: linear built-in, constant with --data-path)",
    )
    g.add_argument("--lr-warmup-decay", type=float, default=0.01, help="warm-up starting factor of --lr")
    g.add_argument(
        "--lr-step-size", type=int, default=None, help="steplr: epochs between decays (default: 30; 5 built-in)"
    )
    g.add_argument("--lr-multi-steps", type=int, nargs="+", default=None, help="multisteplr: milestone epochs")
    g.add_argument(
        "--lr-gamma", type=float, default=None, help="decay factor of steplr/multisteplr/exponentiallr (default: 0.1)"
    )
    g.add_argument("--lr-min", type=float, default=0.0, help="cosineannealinglr's final learning rate")
    g.add_argument("--clip-grad-norm", type=float, default=None, help="clip the gradient norm to this value")
    g.add_argument("--amp", action="store_true", help="mixed precision (autocast; fp16 + GradScaler on CUDA)")
    g.add_argument(
        "--amp-dtype",
        default=None,
        choices=("bf16", "fp16"),
        help="autocast dtype with --amp (default: fp16 on CUDA, bf16 on the CPU)",
    )
    g.add_argument("--sync-bn", action="store_true", help="synchronised BatchNorm across processes (CUDA)")
    g.add_argument(
        "--model-ema",
        action="store_true",
        help="keep an exponential moving average of the weights "
        "(evaluated after each epoch; with --test-only, evaluate the EMA weights)",
    )
    g.add_argument("--model-ema-steps", type=int, default=32, help="steps between EMA updates")
    g.add_argument("--model-ema-decay", type=float, default=0.99998, help="EMA decay per image-epoch (torchvision)")
    g.add_argument(
        "--use-deterministic-algorithms",
        action="store_true",
        help="bit-identical runs on the same machine and software (slower)",
    )
    g.add_argument("--seed", type=int, default=0, help="random seed (model init, data order, augmentation)")
    g.add_argument(
        "--max-steps",
        type=int,
        default=None,
        metavar="N",
        help="stop each epoch after N steps (smoke runs, benchmarks)",
    )

    g = p.add_argument_group("self-distillation")
    g.add_argument(
        "--subpath-alpha",
        type=float,
        default=0.5,
        help="alpha: weight of the super-net's CE; the base-net's distillation loss gets 1 - alpha",
    )
    g.add_argument(
        "--subpath-temp",
        type=float,
        default=None,
        help="distillation temperature T (default: 1; 2 with --teacher, as the reference's train_adn_distill.py)",
    )
    g.add_argument(
        "--kd-topk",
        type=int,
        default=None,
        help="distil over the super-net's top-k classes of each "
        "image (default: min(500, classes): the reference's top-500, all classes below 500)",
    )
    g.add_argument(
        "--calib-images",
        type=int,
        default=1024,
        metavar="N",
        help="after training, calibrate every sub-network's BatchNorm statistics on N training images (0: don't)",
    )


def add_weights_args(p: argparse.ArgumentParser, resume_help: str) -> None:
    g = p.add_argument_group("weights")
    g.add_argument("--resume", default=None, metavar="CHECKPOINT", help=resume_help)
    g.add_argument(
        "--weights",
        default=None,
        metavar="FILE",
        help="weights to load: a state dict (.pth or "
        ".safetensors), one of our checkpoints, torchvision weights or a reference ADN checkpoint",
    )
    g.add_argument(
        "--unsafe-pickle",
        action="store_true",
        help="allow files holding arbitrary pickled objects "
        "(legacy files); they can run code when loaded: only for files you trust",
    )


def add_eval_args(p: argparse.ArgumentParser, title: str = "evaluation", model_ema: bool = True) -> None:
    g = p.add_argument_group(title)
    g.add_argument(
        "--skip-cfg",
        nargs="+",
        default=None,
        metavar="BOOL",
        help="sub-network to evaluate: one "
        "True/False per stage (True = skip its second half) or e.g. TTFF (default: the super-net)",
    )
    g.add_argument("--all-subnets", action="store_true", help="evaluate every sub-network (a table)")
    g.add_argument("--format", default="table", choices=("table", "csv", "json"), help="output format")
    g.add_argument("--output", default=None, metavar="FILE", help="also write the result to FILE")
    if model_ema:  # adn train has its own --model-ema, which means the same with --test-only
        g.add_argument("--model-ema", action="store_true", help="evaluate the checkpoint's EMA weights")
    g.add_argument(
        "--no-calibration",
        action="store_true",
        help="ignore calibrated BatchNorm statistics: evaluate every sub-network as trained",
    )


def add_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--print-freq", type=int, default=None, help="steps between progress reports (default: 10)")
    g.add_argument(
        "--channels-last", action="store_true", help="channels_last memory format (faster convolutions on recent GPUs)"
    )
    g.add_argument("-q", "--quiet", action="store_true", help="no progress output; errors and results only")


# ---------------------------------------------------------------------------------------------- checks
def check_device(name: str) -> torch.device:
    """``torch.device(name)``, or one line naming the fix."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s); use cuda:0")
    return device


def data_config(args: argparse.Namespace) -> DataConfig:
    """The data flags a command has, as a :class:`~adn.training.config.DataConfig` (the others keep their defaults)."""
    return DataConfig(**{f.name: getattr(args, f.name) for f in fields(DataConfig) if hasattr(args, f.name)})


def check_positive(args: argparse.Namespace, names: Sequence[str], minimum: int = 1) -> None:
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < minimum:
            raise UsageError(f"--{name.replace('_', '-')} must be >= {minimum}, got {value}")


__all__ = [
    "DATASETS",
    "DEFAULT_MODEL",
    "HelpFormatter",
    "Parser",
    "add_augment_args",
    "add_data_args",
    "add_dataset_arg",
    "add_device_arg",
    "add_eval_args",
    "add_model_args",
    "add_optim_args",
    "add_run_args",
    "add_weights_args",
    "check_device",
    "check_positive",
    "data_config",
    "explicit_dests",
]
