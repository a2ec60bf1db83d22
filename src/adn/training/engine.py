"""One step and one epoch of self-distillation training (the loop over sub-networks for evaluation is
:func:`adn.evaluation.evaluate.evaluate.evaluate`).

One optimisation step on a batch ``(x, y)`` (:class:`adn.training.losses.SelfDistillation`):

1. super-net (skip nothing): ``alpha * CE(super(x), y)``; backward, which frees its graph;
2. base-net (skip every skippable sub-path): ``(1 - alpha) * T^2 * KL(super(x).detach() || base(x))``; backward;
3. one optimiser step on the summed gradients.

The step never waits for the device: losses, accuracy and the non-finite check accumulate in device tensors,
read back (one host synchronisation) every ``print_freq`` steps and at the end of the epoch.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..core.modules import unwrap, used_parameters
from ..evaluation.metrics import Progress, accuracy, correct_topk
from .losses import SelfDistillation, distillation_loss, self_distillation_loss

__all__ = [
    "EpochResult",
    "SelfDistillation",
    "StepOptions",
    "accuracy",
    "distillation_loss",
    "distillation_step",
    "self_distillation_loss",
    "super_net_only_parameters",
    "train_one_epoch",
    "train_step",
]


@dataclass(frozen=True)
class StepOptions:
    """How each training step runs (everything but the loss, the optimiser and the data)."""

    amp: bool = False
    #: autocast dtype with ``amp``; None: float16 on CUDA (with a GradScaler), bfloat16 elsewhere
    amp_dtype: torch.dtype | None = None
    clip_grad_norm: float | None = None
    #: steps between EMA updates, and epochs without averaging at the start (the LR warm-up, as torchvision)
    ema_every: int = 32
    ema_warmup_epochs: int = 0
    #: steps between progress reports -- and between host synchronisations
    print_freq: int = 10
    max_steps: int | None = None
    channels_last: bool = False


@dataclass(frozen=True)
class EpochResult:
    """What one call of :func:`train_one_epoch` did. Losses are the weighted terms (``loss = loss_super +
    loss_base`` with the alpha weights applied); ``acc1`` is the super-net's training accuracy."""

    loss: float
    loss_super: float
    loss_base: float
    acc1: float
    lr: float
    steps: int
    images: int
    images_per_s: float
    step_time_s: float
    #: the epoch position reached (== steps run so far in this epoch), and whether ``should_stop`` ended it
    next_step: int
    interrupted: bool

    def metrics(self) -> dict[str, float]:
        """The numbers to log (no positions)."""
        return {k: v for k, v in asdict(self).items() if k not in ("next_step", "interrupted")}


def super_net_only_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters the base-net never uses: skippable blocks and the main set of each twinned norm."""
    base = {id(p) for p in used_parameters(model, True)}
    return [p for p in used_parameters(model, False) if id(p) not in base and p.requires_grad]


def train_one_epoch(
    model: nn.Module,
    distill: SelfDistillation,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    data_loader: Iterable,
    device: torch.device | str,
    epoch: int,
    options: StepOptions = StepOptions(),
    model_ema: nn.Module | None = None,
    scaler: torch.amp.GradScaler | None = None,
    start_step: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> EpochResult:
    """One epoch of self-distillation of ``model`` (an adaptive-depth model or its DDP wrapper).

    ``start_step``: the loader starts at this step of the epoch (resuming mid-epoch). ``should_stop`` is polled
    at step boundaries (every step in one process, at every report under DDP so that all processes agree);
    once true, the epoch ends there. A non-finite loss raises ``FloatingPointError`` at the next report, naming
    the first bad step, before anything can be saved.
    """
    model.train()
    net = unwrap(model)
    distributed = isinstance(model, DistributedDataParallel)
    tie_params = super_net_only_parameters(net) if distributed else []
    device = torch.device(device)
    # sums over the epoch on the device: weighted super loss, base loss, correct@1, images, first bad step
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    first_bad = torch.full((), math.inf, dtype=torch.float64, device=device)
    progress = Progress(f"Epoch {epoch}", _epoch_total(data_loader, options, start_step))
    step, steps, interrupted, step_time = start_step, 0, False, 0.0
    start = time.perf_counter()
    try:
        for image, target in data_loader:
            if options.max_steps and step >= options.max_steps:
                break
            t0 = time.perf_counter()
            image, target = _to_device(image, target, device, options.channels_last)
            losses = train_step(model, distill, image, target, criterion, optimizer, options, scaler, tie_params)
            first_bad = _tally(sums, first_bad, step, *losses, target)
            if model_ema is not None and step % options.ema_every == 0:
                model_ema.update_parameters(net)
                if epoch < options.ema_warmup_epochs:  # as the torchvision reference: no averaging during warm-up
                    model_ema.n_averaged.fill_(0)
            step, steps = step + 1, steps + 1
            step_time += time.perf_counter() - t0
            progress.step()
            stop_now = not distributed and should_stop is not None and should_stop()
            if steps % options.print_freq == 0 or stop_now:
                interrupted = _check(sums, first_bad, epoch, device, distributed, should_stop)
                progress.report(step, _summary(sums, step_time, steps, time.perf_counter() - start))
                if interrupted:
                    break
        if not interrupted:  # the end of the epoch: one last check before anything is saved
            interrupted = _check(sums, first_bad, epoch, device, distributed, should_stop)
    finally:
        progress.close()
    return _result(sums, optimizer, steps, step_time, step, interrupted, time.perf_counter() - start)


def _epoch_total(data_loader, options: StepOptions, start_step: int) -> int | None:
    """Steps this call will run (for the progress bar), None when the loader has no length and no limit."""
    total = len(data_loader) if hasattr(data_loader, "__len__") else None
    if options.max_steps:
        left = options.max_steps - start_step
        total = min(total, left) if total is not None else left
    return total


def _to_device(image, target, device: torch.device, channels_last: bool):
    image = image.to(device, non_blocking=True)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    return image, target.to(device, non_blocking=True)


def _tally(sums, first_bad, step: int, loss_super, loss_base, teacher, target) -> torch.Tensor:
    """Add a step's weighted losses, correct@1 and images to ``sums`` (in place, on the device); returns the first
    step with a non-finite loss so far (``inf``: none)."""
    n = teacher.shape[0]
    with torch.no_grad():
        ls, lb = loss_super.double(), loss_base.double()
        sums += torch.stack([ls * n, lb * n, correct_topk(teacher, target, (1,))[0], ls.new_tensor(float(n))])
        finite = torch.isfinite(ls) & torch.isfinite(lb)
        return torch.where(finite, first_bad, first_bad.clamp(max=float(step)))


def _result(sums, optimizer, steps: int, step_time: float, step: int, interrupted: bool, elapsed: float):
    s = sums.tolist()
    images = int(s[3])
    return EpochResult(
        loss=(s[0] + s[1]) / max(1, images),
        loss_super=s[0] / max(1, images),
        loss_base=s[1] / max(1, images),
        acc1=100.0 * s[2] / max(1, images),
        lr=optimizer.param_groups[0]["lr"],
        steps=steps,
        images=images,
        images_per_s=images / max(elapsed, 1e-9),
        step_time_s=step_time / max(1, steps),
        next_step=step,
        interrupted=interrupted,
    )


def train_step(
    model: nn.Module,
    distill: SelfDistillation,
    images: torch.Tensor,
    target: torch.Tensor,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    options: StepOptions = StepOptions(),
    scaler: torch.amp.GradScaler | None = None,
    tie_params: list[nn.Parameter] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimisation step, the one :func:`train_one_epoch` runs (and ``benchmarks/gpu.py`` times): zero the
    gradients, :func:`distillation_step` (forwards under autocast with ``options.amp``, backwards outside it),
    gradient clipping, optimiser (and scaler) step. No host synchronisation (a GradScaler's step aside). Returns
    :func:`distillation_step`'s detached losses and super-net logits."""
    optimizer.zero_grad(set_to_none=True)
    amp_dtype = None
    if options.amp:
        amp_dtype = options.amp_dtype or (torch.float16 if images.device.type == "cuda" else torch.bfloat16)
    out = distillation_step(model, distill, images, target, criterion, scaler, amp_dtype, tie_params)
    _optimizer_step(model, optimizer, scaler, options.clip_grad_norm)
    return out


def distillation_step(
    model: nn.Module,
    distill: SelfDistillation,
    images: torch.Tensor,
    target: torch.Tensor,
    criterion: nn.Module,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    tie_params: list[nn.Parameter] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The two passes of one self-distillation step, for your own training loop: super-net forward + backward,
    then base-net forward + backward, leaving the summed gradients for your ``optimizer.step()``. Returns the two
    (weighted) losses and the super-net's logits, detached. ``amp_dtype``: run the forward passes under
    ``torch.autocast`` with this dtype (backward outside it); ``scaler``: a ``GradScaler`` for float16. Works on the
    model or its ``DistributedDataParallel`` wrapper (one
    gradient all-reduce per step, no ``find_unused_parameters``; ``tie_params``: :func:`super_net_only_parameters`,
    computed once, saves recomputing it every step).
    """
    # DDP reduces gradients from hooks that fire during the backward pass *outside* no_sync(), and (without
    # find_unused_parameters=True) expects every parameter's hook in that pass. A step's two passes together
    # give every parameter a gradient: the super-net pass uses all parameters except the twin norms, the
    # base-net pass uses the twins (and the shared mandatory-path weights). The super-net backward runs under
    # no_sync() (local accumulation, its graph freed before the base pass), and the base-net loss adds
    # 0 * (sum of the super-net-only parameters) so that the second backward visits every parameter: each
    # hook then hands DDP the gradient accumulated over both passes, and DDP averages all of them in ONE
    # bucketed all-reduce that overlaps the second backward. (static_graph=True does not survive no_sync with
    # a pass-dependent parameter set; find_unused_parameters=True would cost a graph traversal per step.)
    net = unwrap(model)
    distributed = isinstance(model, DistributedDataParallel)
    if distributed and tie_params is None:
        tie_params = super_net_only_parameters(net)
    autocast = torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None)
    with model.no_sync() if distributed else contextlib.nullcontext():
        with autocast:  # the pass and its loss are the distillation's: feature capture, an external teacher
            loss_super, super_out, super_features = distill.super_pass(model, images, target, criterion)
        _backward(loss_super, scaler)
    teacher = super_out.detach()
    del super_out  # its graph is already freed by the backward
    with autocast:
        loss_base = distill.base_pass(model, images, teacher, super_features)
        if distributed and tie_params:
            loss_base = loss_base + 0.0 * sum(p.sum() for p in tie_params)
    _backward(loss_base, scaler)
    return loss_super.detach(), loss_base.detach(), teacher


def _backward(loss: torch.Tensor, scaler: torch.amp.GradScaler | None) -> None:
    (scaler.scale(loss) if scaler is not None else loss).backward()


def _optimizer_step(model, optimizer, scaler, clip_grad_norm: float | None) -> None:
    if clip_grad_norm is not None:
        if scaler is not None:
            scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def _check(sums, first_bad, epoch: int, device, distributed: bool, should_stop) -> bool:
    """The one host synchronisation: raise on a non-finite loss so far; return whether to stop (agreed by all
    processes under DDP)."""
    flags = torch.stack(
        [(first_bad < math.inf).double(), first_bad.new_tensor(float(bool(should_stop and should_stop())))]
    )
    if distributed:  # every process must take the same decision at the same step
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    bad, stop = flags.tolist()
    if bad:
        at = first_bad.item()
        where = f"step {int(at)}" if at < math.inf else "a step of another process"
        value = "nan" if (sums[0] + sums[1]).isnan() else "inf"
        raise FloatingPointError(
            f"loss is {value} at epoch {epoch} {where}: training diverged; lower --lr, or add "
            "--clip-grad-norm or --lr-warmup-epochs"
        )
    return bool(stop)


def _summary(sums: torch.Tensor, step_time: float, steps: int, elapsed: float) -> str:
    s = sums.tolist()  # already synchronised by _check
    n = max(1.0, s[3])
    return (
        f"loss {(s[0] + s[1]) / n:.4f} (super {s[0] / n:.4f} + base {s[1] / n:.4f}, weighted)  "
        f"acc1 {100 * s[2] / n:.2f}  {s[3] / max(elapsed, 1e-9):.0f} img/s"
    )
