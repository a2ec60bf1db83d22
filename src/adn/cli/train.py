"""``adn train`` (and ``python train_adn.py``): the flags of the reference code's ``train_adn.py`` -- those of the
torchvision classification reference plus self-distillation -- resolved into the :class:`~adn.TrainConfig`
of a run (presets: :mod:`adn.training.recipes`).

    adn train                                          # ResNet-20-ADN on the built-in digits
    torchrun --nproc_per_node=4 train_adn.py --model resnet50 --data-path /data/imagenet ...
    adn train --resume output/resnet20/checkpoint.pth  # continue that run, with its own arguments
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from ..core.checkpoint import peek_checkpoint_arg, peek_checkpoint_args
from ..errors import UsageError
from ..models.registry import resolve_model_name
from ..training.config import TrainConfig
from ..training.recipes import BUILTIN_PRESET, FINETUNE_PRESET, REFERENCE_DEFAULTS, default_output_dir, fill_presets
from .options import (
    DEFAULT_MODEL,
    Parser,
    add_augment_args,
    add_data_args,
    add_eval_args,
    add_model_args,
    add_optim_args,
    add_run_args,
    add_weights_args,
    check_device,
    check_positive,
    explicit_dests,
)
from .reference_today import add_reference_today_args, check_reference_today_args

#: flags a resumed run may change; every other flag given again must equal the run's own value
CHANGEABLE_ON_RESUME = {
    "epochs",
    "output_dir",
    "print_freq",
    "workers",
    "device",
    "quiet",
    "keep_checkpoints",
    "data_path",
    "bad_images",
    "unsafe_pickle",
    "calib_images",
    "download",
    "resume",
    "max_steps",
    "torch_compile",
    "compile",
    "cache_dataset",
    "teacher_weights",
}
#: never taken from a checkpoint: they describe this invocation or this machine, not the run
NOT_RESTORED = {
    "resume",
    "weights",
    "start_epoch",
    "test_only",
    "distributed",
    "rank",
    "world_size",
    "dist_world_size",
    "dist_url",
    "gpu",
    "restored",
    "resumed_epochs",
    "pretrained",
    "quiet",
    "print_freq",
    "device",
    "workers",
}


def get_args_parser(prog: str = "adn train") -> Parser:
    """Every training flag, plus the reference's ``--test-only`` evaluation flags (``python train_adn.py
    --test-only ...``; ``adn eval`` is the same with its own, shorter help)."""
    p = Parser(prog, "train an adaptive-depth network by self-distillation (the reference code's train_adn.py)")
    add_model_args(p)
    add_data_args(p, train=True)
    add_augment_args(p)
    add_optim_args(p)
    add_weights_args(
        p,
        "checkpoint to continue (its run's arguments and output dir are restored; 'auto': the "
        "output dir's checkpoint.pth if there is one, as after a torchrun elastic restart)",
    )
    p._action_groups[-1].add_argument(
        "--pretrained",
        default=None,
        metavar="FILE",
        help="fine-tune: start from the weights of the plain (unconverted) model -- torchvision, timm or your own "
        "state dict -- with each twin norm a copy of its main norm; unset flags take the fine-tuning preset "
        f"({FINETUNE_PRESET['epochs']} epochs, {FINETUNE_PRESET['lr_scheduler']}, a tenth of the learning rate)",
    )
    g = p.add_argument_group("output")
    g.add_argument(
        "--output-dir",
        default=None,
        help="where checkpoints, metrics.jsonl and metrics.png go "
        "(default: output/<model>, or output/<model>-2, -3 ... when that holds an earlier run)",
    )
    g.add_argument(
        "--keep-checkpoints",
        default="2",
        metavar="N|all",
        help="keep the last N model_<epoch>.pth "
        "files plus the best one (by super-net Acc@1); 'all' keeps every epoch, as the reference does",
    )
    g.add_argument("--start-epoch", type=int, default=0, metavar="N", help="first epoch (with --weights)")
    add_run_args(p)
    p.add_argument(
        "--test-only",
        action="store_true",
        help="evaluate instead of training, as the reference's "
        "train_adn.py --test-only (what adn eval does; evaluation flags below)",
    )
    add_eval_args(p, "evaluation (with --test-only)", model_ema=False)
    add_reference_today_args(p)
    return p


# -------------------------------------------------------------------------------------------- resolution
def resolve_args(args: argparse.Namespace, explicit: set[str]) -> argparse.Namespace:
    """Fill unset flags (a resumed run's own arguments, else the built-in preset or the torchvision reference's
    defaults), then reject contradictions. ``explicit``: the flags given on the command line."""
    if args.resume is None and not args.test_only and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)) > 0:
        args.resume = "auto"  # torchrun restarted the workers after a failure: continue from the last checkpoint
    if args.resume is not None and args.start_epoch and not args.test_only:
        raise UsageError(
            "--resume continues at the checkpoint's epoch; drop --start-epoch (or drop --resume and "
            "start from --weights at --start-epoch)"
        )
    if sum(x is not None for x in (args.resume, args.weights, args.pretrained)) > 1:
        raise UsageError("--resume, --weights and --pretrained all load the model; give one of them")
    if args.model is None and args.resume not in (None, "auto"):
        args.model = peek_checkpoint_arg(args.resume, "model")
    if args.resume == "auto":
        if args.test_only:
            raise UsageError("--resume auto continues training; to evaluate, give the checkpoint file: --resume PATH")
        model = args.model or DEFAULT_MODEL
        out = args.output_dir or default_output_dir(resolve_model_name(model), latest=True)
        auto = Path(out) / "checkpoint.pth"
        args.resume = str(auto) if auto.is_file() else None
        args.output_dir = args.output_dir or out
    args.restored = []
    if args.resume is not None and not args.test_only:
        _restore_run_args(args, explicit)
    if args.model is None:
        trained_as = peek_checkpoint_arg(args.weights, "model") if args.weights else None
        args.model = trained_as if isinstance(trained_as, str) else DEFAULT_MODEL
    args.model = resolve_model_name(args.model)  # one line naming the known models if unknown
    vars(args).update(fill_presets(vars(args)))  # the built-in preset, the reference's defaults or fine-tuning
    args.device = str(check_device(args.device or ("cuda" if _cuda() else "cpu")))
    if not args.test_only and args.output_dir is None:
        args.output_dir = default_output_dir(args.model)
    _check_train_args(args)
    return args


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _restore_run_args(args: argparse.Namespace, explicit: set[str]) -> None:
    """A resumed run is the same run: its arguments come from the checkpoint; flags given again must agree,
    except the ones that may change (:data:`CHANGEABLE_ON_RESUME`, e.g. ``--epochs`` to extend it)."""
    stored = peek_checkpoint_args(args.resume)
    if stored is None:
        return  # not readable that way, or no args: the real load will tell
    restored = []
    for key, value in stored.items():
        if key in NOT_RESTORED or not hasattr(args, key):
            continue
        if key in explicit:
            if key not in CHANGEABLE_ON_RESUME and getattr(args, key) != value:
                shown = value if not isinstance(value, list) else " ".join(map(str, value))
                raise UsageError(
                    f"--{key.replace('_', '-')} {getattr(args, key)} differs from the resumed run's "
                    f"{shown}; a resumed run keeps its arguments: drop the flag, or start a new run "
                    f"from its weights (--weights {args.resume})"
                )
            continue
        if key == "output_dir":
            value = str(Path(args.resume).parent)  # where the run lives now, even if it was moved
        if getattr(args, key) != value:
            setattr(args, key, value)
            restored.append(key)
    args.restored = restored


def _check_train_args(args: argparse.Namespace) -> None:
    if args.test_only:
        if args.resume is None and args.weights is None:
            raise UsageError("nothing to evaluate: give --resume CHECKPOINT or --weights FILE")
        if args.all_subnets and args.skip_cfg is not None:
            raise UsageError("--all-subnets evaluates every sub-network; drop --skip-cfg")
        for flag, value in (("--mixup-alpha", args.mixup_alpha), ("--cutmix-alpha", args.cutmix_alpha)):
            if value:
                raise UsageError(f"{flag} is a training augmentation; drop it with --test-only / adn eval")
    else:
        for flag, value in (
            ("--skip-cfg", args.skip_cfg),
            ("--all-subnets", args.all_subnets or None),
            ("--output", args.output),
            ("--no-calibration", args.no_calibration or None),
        ):
            if value is not None:
                raise UsageError(f"{flag} applies to evaluation only: use `adn eval` or add --test-only")
        if args.format != "table":
            raise UsageError("--format applies to evaluation only: use `adn eval` or add --test-only")
        if args.resume is None and (Path(args.output_dir) / "checkpoint.pth").exists():
            # a fresh run would overwrite the earlier run's checkpoints after its first epoch
            raise UsageError(
                f"{args.output_dir} already holds checkpoint.pth of an earlier run; continue it with "
                "--resume auto, or choose another --output-dir (or delete the old one)"
            )
    if not 0.0 <= args.subpath_alpha <= 1.0:
        raise UsageError(f"--subpath-alpha must be in [0, 1], got {args.subpath_alpha}")
    if args.subpath_temp is not None and args.subpath_temp <= 0:
        raise UsageError(f"--subpath-temp must be > 0, got {args.subpath_temp}")
    check_positive(
        args,
        ("kd_topk", "batch_size", "epochs", "model_ema_steps", "print_freq", "train_subset", "val_subset", "max_steps"),
    )
    check_positive(args, ("workers", "calib_images"), minimum=0)
    if args.keep_checkpoints != "all" and not (args.keep_checkpoints.isdigit() and int(args.keep_checkpoints) >= 1):
        raise UsageError(f"--keep-checkpoints takes a number >= 1 or 'all', got {args.keep_checkpoints!r}")
    if args.lr_scheduler == "multisteplr" and not args.lr_multi_steps:
        raise UsageError("--lr-scheduler multisteplr needs --lr-multi-steps EPOCH [EPOCH ...]")
    if args.lr_warmup_epochs < 0 or (args.lr_warmup_epochs and args.lr_warmup_epochs >= args.epochs):
        raise UsageError(f"--lr-warmup-epochs ({args.lr_warmup_epochs}) must be in [0, --epochs ({args.epochs}))")
    if args.start_epoch < 0 or (not args.test_only and args.resume is None and args.start_epoch >= args.epochs):
        raise UsageError(f"--start-epoch ({args.start_epoch}) must be in [0, --epochs ({args.epochs}))")
    if args.sync_bn and not args.device.startswith("cuda"):
        raise UsageError("--sync-bn needs CUDA devices (SyncBatchNorm does not run on the CPU)")
    if args.amp_dtype is not None and not args.amp:
        raise UsageError("--amp-dtype sets the dtype of --amp; add --amp")
    check_reference_today_args(args)


def parse(argv: Sequence[str] | None, prog: str = "adn train") -> argparse.Namespace:
    """The resolved flags of ``adn train ARGV`` (presets filled, a resumed run's own arguments restored)."""
    parser = get_args_parser(prog)
    argv = list(argv or [])
    return resolve_args(parser.parse_args(argv), explicit_dests(parser, argv))


def parse_config(argv: Sequence[str] | None) -> TrainConfig:
    """The :class:`~adn.training.config.TrainConfig` ``adn train ARGV`` runs."""
    return TrainConfig.from_flat(vars(parse(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    """``adn train`` / ``python train_adn.py``: train, or evaluate with ``--test-only``."""
    args = parse(argv)
    if args.test_only:
        from ..evaluation.evaluate import run_evaluation
        from .eval import eval_config

        return run_evaluation(eval_config(args))
    from ..training.fit import fit

    return fit(TrainConfig.from_flat(vars(args))).status


__all__ = [
    "BUILTIN_PRESET",
    "FINETUNE_PRESET",
    "REFERENCE_DEFAULTS",
    "default_output_dir",
    "get_args_parser",
    "main",
    "parse",
    "parse_config",
    "resolve_args",
]
