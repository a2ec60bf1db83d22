"""Flags shared by the subcommands: one parser class (one-line errors), one help style, one set of groups.

Each subcommand builds its parser from the groups it needs, so ``adn eval --help`` shows evaluation flags
only. Defaults that depend on the data (the built-in preset vs the torchvision reference) are resolved later
(:mod:`adn.cli.train`); their help says so and no ``(default: None)`` is printed.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from ..errors import UsageError
from ..registry import list_models

BAD_IMAGE_POLICIES = ("stop", "skip")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
AUTO_AUGMENT_POLICIES = ("ra", "ta_wide", "augmix", "imagenet")
DATASETS = ("digits", "fashion-mnist")
DEFAULT_MODEL = "resnet20"


class HelpFormatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` once, only when there is a default worth showing and the help does not name it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, argparse.SUPPRESS) or action.nargs == 0:
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``adn: error: ...``, exit status 2) instead of usage dumps."""

    def __init__(self, prog: str, description: str) -> None:
        super().__init__(prog=prog, description=description, formatter_class=HelpFormatter)

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def explicit_dests(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The destinations of the flags that appear in ``argv`` (``--lr 0.1``, ``--lr=0.1``, ``-b 32``)."""
    found = set()
    for token in argv:
        option = token.split("=", 1)[0]
        action = parser._option_string_actions.get(option)
        if action is not None:
            found.add(action.dest)
    return found


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
    g.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")


def add_data_args(p: argparse.ArgumentParser, train: bool) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--data-path",
        default=None,
        help="folder with train/ and val/ ImageFolder trees (ILSVRC-2012 "
        "layout); omitted: a built-in dataset (--dataset)",
    )
    g.add_argument(
        "--dataset",
        default="digits",
        choices=DATASETS,
        help="built-in dataset used without "
        "--data-path: digits (8x8 handwritten digits bundled with scikit-learn) or fashion-mnist",
    )
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
    "add_eval_args",
    "add_model_args",
    "add_run_args",
    "add_weights_args",
    "check_device",
    "check_positive",
    "explicit_dests",
]
