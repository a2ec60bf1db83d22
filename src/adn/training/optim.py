"""Optimiser, learning-rate schedule and weight EMA, built from an :class:`adn.training.config.OptimConfig` as the
torchvision classification reference builds them from its flags (``--opt``, ``--lr-scheduler``, ``--lr-warmup-*``,
``--norm-weight-decay`` ...)."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..core.checkpoint import load_state_dict_compat
from ..core.network import NORM_TYPES
from .config import OPTIMIZERS, SCHEDULERS, OptimConfig

TRANSFORMER_EMBEDDING_KEYS = ("class_token", "position_embedding", "relative_position_bias_table")


def set_weight_decay(model: nn.Module, args: OptimConfig) -> list[dict]:
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


def build_optimizer(model: nn.Module, args: OptimConfig) -> torch.optim.Optimizer:
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
    if args.opt == "adamw":
        return torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    raise ValueError(f"unknown optimiser {args.opt!r}; known: {', '.join(OPTIMIZERS)}")


def build_scheduler(optimizer: torch.optim.Optimizer, args: OptimConfig):
    """Per-epoch schedule with optional warm-up, as in the torchvision reference."""
    S = torch.optim.lr_scheduler
    main_epochs = args.epochs - args.lr_warmup_epochs
    if args.lr_scheduler == "steplr":
        main = S.StepLR(optimizer, step_size=args.lr_step_size, gamma=args.lr_gamma)
    elif args.lr_scheduler == "multisteplr":
        main = S.MultiStepLR(optimizer, milestones=list(args.lr_multi_steps), gamma=args.lr_gamma)
    elif args.lr_scheduler == "cosineannealinglr":
        main = S.CosineAnnealingLR(optimizer, T_max=main_epochs, eta_min=args.lr_min)
    elif args.lr_scheduler == "exponentiallr":
        main = S.ExponentialLR(optimizer, gamma=args.lr_gamma)
    else:
        raise ValueError(f"unknown lr scheduler {args.lr_scheduler!r}; known: {', '.join(SCHEDULERS)}")
    if args.lr_warmup_epochs == 0:
        return main
    if args.lr_warmup_method == "linear":
        warmup = S.LinearLR(optimizer, start_factor=args.lr_warmup_decay, total_iters=args.lr_warmup_epochs)
    else:
        warmup = S.ConstantLR(optimizer, factor=args.lr_warmup_decay, total_iters=args.lr_warmup_epochs)
    return S.SequentialLR(optimizer, schedulers=[warmup, main], milestones=[args.lr_warmup_epochs])


def build_ema(model: nn.Module, args: OptimConfig, batch_size: int, world_size: int, device) -> AveragedModel:
    """EMA of weights and buffers; the decay is adjusted for batch size and update interval (torchvision)."""
    adjust = world_size * batch_size * args.model_ema_steps / args.epochs
    alpha = min(1.0, (1.0 - args.model_ema_decay) * adjust)
    return AveragedModel(model, device=device, multi_avg_fn=get_ema_multi_avg_fn(1.0 - alpha), use_buffers=True)


def load_ema_state(model_ema: AveragedModel, state: dict) -> None:
    """Load an EMA state dict (ours or a published one: ``module.<torchvision name>`` + ``n_averaged``)."""
    weights = {k: v for k, v in state.items() if k != "n_averaged"}
    load_state_dict_compat(model_ema.module, weights)
    if "n_averaged" in state:
        model_ema.n_averaged.copy_(state["n_averaged"])


__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "build_ema",
    "build_optimizer",
    "build_scheduler",
    "load_ema_state",
    "set_weight_decay",
]
