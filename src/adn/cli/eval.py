"""``adn eval``: evaluate one sub-network (``--skip-cfg``) or every one (``--all-subnets``) of a checkpoint or
weights file -- ``adn train --test-only`` with only the evaluation flags."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..core.checkpoint import peek_checkpoint_arg
from ..errors import UsageError
from ..models.registry import resolve_model_name
from ..runtime.threads import apply_threads
from ..training.config import EvalConfig
from ..training.recipes import preset_for
from .options import (
    DATASETS,
    DEFAULT_MODEL,
    Parser,
    add_data_args,
    add_eval_args,
    add_model_args,
    add_run_args,
    add_weights_args,
    check_device,
    check_positive,
    data_config,
    explicit_dests,
)


def get_args_parser(prog: str = "adn eval") -> Parser:
    p = Parser(prog, "evaluate one sub-network (--skip-cfg) or all of them (--all-subnets)")
    add_model_args(p)
    add_data_args(p, train=False)
    add_weights_args(p, "training checkpoint to evaluate (its model, EMA weights and calibration included)")
    add_eval_args(p)
    add_run_args(p)
    return p


def resolve_eval_args(args: argparse.Namespace, explicit: set[str] = frozenset()) -> argparse.Namespace:
    """The model and built-in dataset a checkpoint was trained on (when not given), data-dependent defaults,
    checks. ``explicit``: the flags given on the command line."""
    if args.resume == "auto":
        raise UsageError("--resume auto continues training; to evaluate, give the checkpoint file: --resume PATH")
    if args.resume is not None and args.weights is not None:
        raise UsageError("--resume and --weights both load the model; give one of them")
    if args.resume is None and args.weights is None:
        raise UsageError("nothing to evaluate: give --resume CHECKPOINT or --weights FILE")
    if args.all_subnets and args.skip_cfg is not None:
        raise UsageError("--all-subnets evaluates every sub-network; drop --skip-cfg")
    if args.builtin_data:
        if args.data_path is not None:
            raise UsageError("--builtin-data evaluates on the built-in digits; drop it or --data-path")
        if "dataset" in explicit and args.dataset != "digits":
            raise UsageError(f"--builtin-data means --dataset digits; drop it or --dataset {args.dataset}")
        args.dataset, explicit = "digits", {*explicit, "dataset"}
    if args.model is None:
        trained_as = peek_checkpoint_arg(args.resume or args.weights, "model")
        args.model = trained_as if isinstance(trained_as, str) else DEFAULT_MODEL
    args.model = resolve_model_name(args.model)
    if args.data_path is None and "dataset" not in explicit:  # evaluate on what it was trained on
        trained_on = peek_checkpoint_arg(args.resume or args.weights, "dataset")
        if isinstance(trained_on, str) and trained_on in DATASETS:
            args.dataset = trained_on
    preset = preset_for(args.data_path)
    for key in ("batch_size", "workers", "print_freq"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    args.device = str(check_device(args.device or ("cuda" if _cuda() else "cpu")))
    check_positive(args, ("batch_size", "print_freq", "val_subset"))
    check_positive(args, ("workers",), minimum=0)
    args.test_only = True
    return args


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def eval_config(args: argparse.Namespace) -> EvalConfig:
    """The :class:`~adn.EvalConfig` of resolved evaluation flags (``adn eval``, ``adn train --test-only``)."""
    return EvalConfig(
        model=args.model,
        source=args.resume or args.weights,
        data=data_config(args),
        device=args.device,
        model_ema=args.model_ema,
        no_calibration=args.no_calibration,
        unsafe_pickle=args.unsafe_pickle,
        skip_cfg=None if args.skip_cfg is None else " ".join(args.skip_cfg),
        all_subnets=args.all_subnets,
        format=args.format,
        output=args.output,
        channels_last=args.channels_last,
        print_freq=args.print_freq,
        quiet=args.quiet,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser, argv = get_args_parser(), list(argv or [])
    args = resolve_eval_args(parser.parse_args(argv), explicit_dests(parser, argv))
    apply_threads(args.threads)
    from ..evaluation.evaluate import run_evaluation

    return run_evaluation(eval_config(args))


__all__ = ["eval_config", "get_args_parser", "main", "resolve_eval_args"]
