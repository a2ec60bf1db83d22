"""Self-distillation training step, one training epoch and evaluation of any sub-network.

One optimisation step on a batch ``(x, y)`` (Kang & Lee, NeurIPS 2024):

1. super-net (skip nothing): ``L_super = alpha * CE(super(x), y)``; backward, which frees its graph;
2. base-net (skip every skippable sub-path):
   ``L_base = (1 - alpha) * T^2 * KL(softmax(super(x)/T).detach() || softmax(base(x)/T))``; backward;
3. one optimiser step on the summed gradients.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .distributed import is_main_process, reduce_sum
from .skip import SkipLike, parse_skip, used_parameters

__all__ = ["MetricLogger", "accuracy", "evaluate", "self_distillation_loss", "train_one_epoch"]


# ------------------------------------------------------------------------------------------------- losses
def self_distillation_loss(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0, topk: int | None = None
) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, averaged over the batch.

    ``teacher_logits`` are detached here. With ``topk`` the two distributions are restricted to (and
    renormalised over) the teacher's ``topk`` highest-scoring classes of each sample.
    """
    teacher_logits = teacher_logits.detach().float()
    student_logits = student_logits.float()
    if topk is not None and topk < teacher_logits.shape[1]:
        index = teacher_logits.topk(topk, dim=1).indices
        teacher_logits, student_logits = teacher_logits.gather(1, index), student_logits.gather(1, index)
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return temperature**2 * kl


def accuracy(output: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...] = (1,)) -> list[float]:
    """Top-k accuracies in percent; soft (mixup) targets count their arg-max class."""
    with torch.no_grad():
        if target.ndim == 2:
            target = target.argmax(dim=1)
        maxk = min(max(topk), output.shape[1])
        pred = output.topk(maxk, dim=1).indices
        correct = pred.eq(target[:, None])
        return [correct[:, : min(k, maxk)].any(dim=1).float().mean().item() * 100.0 for k in topk]


# ----------------------------------------------------------------------------------------------- logging
class MetricLogger:
    """Running averages plus progress display: a tqdm bar on an interactive terminal (rank 0 only),
    otherwise one plain line every ``print_freq`` steps."""

    def __init__(self, header: str, print_freq: int = 10) -> None:
        self.header, self.print_freq = header, max(1, print_freq)
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.images = 0
        self.elapsed = 0.0

    def update(self, n: int = 1, **values: float) -> None:
        for k, v in values.items():
            self.sums[k] += float(v) * n
            self.counts[k] += n

    def avg(self, key: str) -> float:
        return self.sums[key] / max(1, self.counts[key])

    def summary(self) -> str:
        return "  ".join(f"{k} {self.avg(k):.4f}" for k in self.sums)

    def log_every(self, iterable: Iterable, total: int | None = None) -> Iterator:
        """Yield from ``iterable`` while reporting progress and images/s (``self.images`` counted by caller)."""
        total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        show = is_main_process()
        bar = None
        if show and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=total, desc=self.header, leave=False, dynamic_ncols=True)
        start = time.perf_counter()
        for i, item in enumerate(iterable):
            yield item
            self.elapsed = time.perf_counter() - start
            rate = self.images / max(self.elapsed, 1e-9)
            if bar is not None:
                bar.set_postfix_str(f"{self.summary()}  {rate:.0f} img/s", refresh=False)
                bar.update(1)
            elif show and (i + 1) % self.print_freq == 0:
                print(f"{self.header} [{i + 1}/{total or '?'}]  {self.summary()}  {rate:.0f} img/s", flush=True)
        if bar is not None:
            bar.close()

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.elapsed, 1e-9)


# ------------------------------------------------------------------------------------------------ training
def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def _super_net_only_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters the base-net never uses: skippable blocks and the main set of each twinned norm."""
    base = {id(p) for p in used_parameters(model, True)}
    return [p for p in used_parameters(model, False) if id(p) not in base and p.requires_grad]


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    data_loader: Iterable,
    device: torch.device,
    epoch: int,
    args,
    model_ema: nn.Module | None = None,
    scaler: torch.amp.GradScaler | None = None,
    start_step: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, float]:
    """One epoch of self-distillation. ``args`` supplies ``subpath_alpha``, ``subpath_temp``, ``kd_topk``,
    ``amp``, ``clip_grad_norm``, ``model_ema_steps``, ``lr_warmup_epochs``, ``print_freq`` and optionally
    ``max_steps``. Returns the epoch's mean losses, train Acc@1 of the super-net and images/s, plus
    ``next_step`` (the epoch position reached) and ``interrupted`` (1.0 when ``should_stop`` ended it early).

    ``start_step``: the loader starts at this step of the epoch (resuming mid-epoch). ``should_stop`` is
    polled before each optimiser step; once it returns True the epoch ends after that step (a step boundary),
    on every process at the same step. A non-finite loss raises ``FloatingPointError`` before the optimiser
    step, so the weights in memory and on disk are never updated from it."""
    model.train()
    net = _unwrap(model)
    num_stages = net.num_stages
    super_skip, base_skip = (False,) * num_stages, (True,) * num_stages
    alpha, temperature = args.subpath_alpha, args.subpath_temp
    distributed = isinstance(model, DistributedDataParallel)
    # DDP reduces gradients from hooks that fire during the backward pass *outside* no_sync(), and (without
    # find_unused_parameters=True) expects every parameter's hook in that pass. A step's two passes together
    # give every parameter a gradient: the super-net pass uses all parameters except the twin norms, the
    # base-net pass uses the twins (and the shared mandatory-path weights). The super-net backward runs under
    # no_sync() (local accumulation, its graph freed before the base pass), and the base-net loss adds
    # 0 * (sum of the super-net-only parameters) so that the second backward visits every parameter: each
    # hook then hands DDP the gradient accumulated over both passes, and DDP averages all of them in ONE
    # bucketed all-reduce that overlaps the second backward. (static_graph=True does not survive no_sync with
    # a pass-dependent parameter set; find_unused_parameters=True would cost a graph traversal per step.)
    tie_params = _super_net_only_parameters(net) if distributed else []
    amp_device = torch.device(device).type
    amp_dtype = torch.float16 if amp_device == "cuda" else torch.bfloat16
    max_steps = getattr(args, "max_steps", None)
    total = len(data_loader) if hasattr(data_loader, "__len__") else None
    if max_steps:
        total = min(total, max_steps - start_step) if total else max_steps - start_step

    logger = MetricLogger(f"Epoch {epoch}", args.print_freq)
    step_time = 0.0
    step, interrupted = start_step, False
    for i, (image, target) in enumerate(logger.log_every(data_loader, total)):
        step = start_step + i
        if max_steps and step >= max_steps:
            break
        start = time.perf_counter()
        image, target = image.to(device, non_blocking=True), target.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        autocast = torch.autocast(amp_device, dtype=amp_dtype, enabled=args.amp)

        sync_ctx = model.no_sync() if distributed else contextlib.nullcontext()
        with sync_ctx:
            with autocast:
                super_out = model(image, skip=super_skip)
                loss_super = alpha * criterion(super_out, target)
            _backward(loss_super, scaler)
        teacher = super_out.detach()
        del super_out  # the super-net graph is already freed by its backward

        with autocast:
            base_out = model(image, skip=base_skip)
            loss_base = (1 - alpha) * self_distillation_loss(teacher, base_out, temperature, args.kd_topk)
            if tie_params:
                loss_base = loss_base + 0.0 * sum(p.sum() for p in tie_params)
        _backward(loss_base, scaler)

        # checked before the optimiser step: a diverged step never reaches the weights (or a checkpoint)
        loss_s, loss_b = loss_super.item(), loss_base.item()
        flags = [
            float(not (math.isfinite(loss_s) and math.isfinite(loss_b))),
            float(bool(should_stop and should_stop())),
        ]
        if distributed:  # every process must take the same decision at the same step
            t = torch.tensor(flags, device=image.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flags = t.tolist()
        if flags[0]:
            raise FloatingPointError(
                f"loss is {loss_s + loss_b} at epoch {epoch} step {step}: training diverged; "
                "lower --lr, or add --clip-grad-norm or --lr-warmup-epochs"
            )
        interrupted = bool(flags[1])

        if args.clip_grad_norm is not None:
            if scaler is not None:
                scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()

        if model_ema is not None and step % args.model_ema_steps == 0:
            model_ema.update_parameters(net)
            if epoch < args.lr_warmup_epochs:  # as the torchvision reference: no averaging during warm-up
                model_ema.n_averaged.fill_(0)

        step_time += time.perf_counter() - start
        n = image.shape[0]
        logger.images += n
        (acc1,) = accuracy(teacher, target, (1,))
        logger.update(n, loss=loss_s + loss_b, loss_super=loss_s, loss_base=loss_b, acc1=acc1)
        logger.update(1, lr=optimizer.param_groups[0]["lr"])
        step += 1
        if interrupted:
            break
    stats = {k: logger.avg(k) for k in logger.sums}
    stats["next_step"], stats["interrupted"] = float(step), float(interrupted)
    stats["images_per_s"] = logger.images_per_s
    stats["step_time_s"] = step_time / max(1, logger.counts["lr"])
    return stats


def _backward(loss: torch.Tensor, scaler: torch.amp.GradScaler | None) -> None:
    (scaler.scale(loss) if scaler is not None else loss).backward()


# ---------------------------------------------------------------------------------------------- evaluation
@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str,
    skip: SkipLike = None,
    print_freq: int = 100,
    log_suffix: str = "",
) -> dict[str, float]:
    """Evaluate sub-network ``skip`` (default: the model's current ``skip``, the super-net unless set).

    Returns ``{"acc1", "acc5", "loss", "images"}``: accuracies in percent and the mean cross-entropy, summed
    over all processes of a distributed run.
    """
    model.eval()
    net = _unwrap(model)
    net = getattr(net, "module", net)  # AveragedModel (EMA) keeps the network in .module
    skip = net.resolve_skip(skip) if hasattr(net, "resolve_skip") else parse_skip(skip, net.num_stages)
    header = f"Test {log_suffix}".strip()
    logger = MetricLogger(header, print_freq)
    total_loss = correct1 = correct5 = count = 0.0
    for image, target in logger.log_every(loader):
        image, target = image.to(device, non_blocking=True), target.to(device, non_blocking=True)
        output = model(image, skip=skip).float()
        total_loss += F.cross_entropy(output, target, reduction="sum").item()
        acc1, acc5 = accuracy(output, target, (1, 5))
        n = image.shape[0]
        correct1 += acc1 * n / 100
        correct5 += acc5 * n / 100
        count += n
        logger.images += n
        logger.update(n, acc1=acc1, acc5=acc5)
    total_loss, correct1, correct5, count = reduce_sum([total_loss, correct1, correct5, count], device)
    if count == 0:
        raise ValueError("the evaluation set is empty")
    return {"acc1": 100 * correct1 / count, "acc5": 100 * correct5 / count, "loss": total_loss / count, "images": count}
