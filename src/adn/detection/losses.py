"""Detection self-distillation: the losses and one training step (two backward passes, one all-reduce).

One step on a batch:

1. **super-net** (skip nothing): its detection losses (torchvision's, summed); backward under DDP's
   ``no_sync`` -- gradients accumulate locally, its graph is freed;
2. **base-net** (skip every skippable sub-path): its detection losses
   ``+ feature_weight * feature_term + prediction_weight * prediction_term``, both terms against the super-net's
   detached outputs; backward -- the one gradient all-reduce of the step;
3. one optimiser step on the summed gradients (the caller's).

``feature_term``: mean over FPN levels of the squared difference to the super-net's FPN maps, relative to
the latter's mean square.
``prediction_term``: for R-CNN, ``T^2 * KL`` of the box head's class distributions on the super-net's best
``proposals`` RPN boxes per image (both nets classify the same boxes) plus the Bernoulli KL of the RPN
objectness on every anchor; for RetinaNet, the Bernoulli KL of every anchor's per-class sigmoid scores, summed
over classes and averaged over anchors. docs/detection.md says why.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..core.modules import unwrap, used_parameters
from ..training.losses import distillation_loss

__all__ = [
    "DetectionDistillation",
    "StepLosses",
    "bernoulli_kl",
    "detection_step",
    "feature_term",
    "plain_step",
    "prediction_term",
    "unused_parameters",
]


@dataclass(frozen=True)
class DetectionDistillation:
    """Weights of the base-net's two alignment terms and the temperature of its class-distribution term."""

    feature_weight: float = 1.0
    prediction_weight: float = 1.0
    temperature: float = 1.0
    #: R-CNN: the class-distribution term is taken on the super-net's best ``proposals`` RPN boxes per image
    proposals: int = 32

    def __post_init__(self) -> None:
        if self.feature_weight < 0 or self.prediction_weight < 0:
            raise ValueError("the distillation weights (--feature-weight, --prediction-weight) must be >= 0")
        if self.proposals < 1:
            raise ValueError(f"the distillation needs >= 1 proposal per image, got {self.proposals}")
        if self.temperature <= 0:
            raise ValueError(f"the distillation temperature must be > 0, got {self.temperature}")


@dataclass(frozen=True)
class StepLosses:
    """One step's losses, detached: ``super`` and ``base`` (what each backward pass got) and the base-net's parts."""

    super: torch.Tensor
    base: torch.Tensor
    base_detection: torch.Tensor
    feature: torch.Tensor
    prediction: torch.Tensor


def feature_term(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over levels of the relative squared error ``mean((s - t)^2) / mean(t^2)``; the teacher is detached.

    Relative, not a plain MSE: FPN maps have no fixed scale, and a plain MSE through the weights both nets share
    fed back into the teacher's scale -- it grew from 2 to 3,000 within 60 steps of the built-in recipe."""
    terms = [
        F.mse_loss(s, t.detach()) / t.detach().pow(2).mean().clamp_min(1e-6)
        for s, t in zip(student, teacher, strict=True)
    ]
    return torch.stack(terms).mean()


def bernoulli_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Element-wise ``KL(Bernoulli(sigmoid(teacher)) || Bernoulli(sigmoid(student)))``: binary cross-entropy
    with the teacher's probability as soft target, minus that target's entropy (so it is 0 when they agree)."""
    p = torch.sigmoid(teacher_logits.detach())
    cross = F.binary_cross_entropy_with_logits(student_logits, p, reduction="none")
    entropy = F.binary_cross_entropy_with_logits(teacher_logits.detach(), p, reduction="none")
    return cross - entropy


def prediction_term(
    kind: str, student: Mapping[str, object], teacher: Mapping[str, object], temperature: float = 1.0
) -> torch.Tensor:
    """The base-net's prediction-level term against the super-net's outputs (see the module docstring)."""
    if kind == "retinanet":
        return bernoulli_kl(student["logits"], teacher["logits"]).sum(-1).mean()
    classes = distillation_loss(teacher["logits"], student["logits"], temperature)
    flat = [torch.cat([o.flatten() for o in out["objectness"]]) for out in (student, teacher)]
    return classes + bernoulli_kl(*flat).mean()


def unused_parameters(model: nn.Module, skip: tuple[bool, ...]) -> list[nn.Parameter]:
    """Trainable parameters of the detector that sub-network ``skip`` does not use (skipped blocks, the idle norm
    set): a pass that must give every parameter's DDP hook a gradient adds ``0 * their sum``."""
    det = unwrap(model)
    used = {id(p) for p in used_parameters(det.body, skip)}
    body = {id(p) for p in det.body.parameters()}
    return [p for p in det.parameters() if p.requires_grad and id(p) in body and id(p) not in used]


def detection_step(
    model: nn.Module,
    distill: DetectionDistillation,
    images: Sequence[torch.Tensor],
    targets: Sequence[Mapping[str, torch.Tensor]],
    tie_params: list[nn.Parameter] | None = None,
) -> StepLosses:
    """Both passes of one self-distillation step of an :class:`~adn.detection.AdaptiveDetector` (or its DDP
    wrapper), gradients left summed for the caller's ``optimizer.step()``. ``tie_params``: under DDP,
    :func:`unused_parameters` of the base-net (computed once by the caller, else here)."""
    # As adn.training.engine.distillation_step: the super-net pass runs under no_sync; the base-net pass adds 0 * (the
    # parameters only the super-net uses) so that its backward visits every parameter and DDP reduces the
    # gradients of both passes in one bucketed all-reduce, without find_unused_parameters.
    det = unwrap(model)
    distributed = isinstance(model, DistributedDataParallel)
    n = det.num_stages
    with model.no_sync() if distributed else contextlib.nullcontext():
        out = model(images, targets, skip=(False,) * n, distill=True, proposals=distill.proposals)
        loss_super = sum(out["losses"].values())
        loss_super.backward()
    teacher = {
        "features": [f.detach() for f in out["features"]],
        "logits": out["logits"].detach(),
        "objectness": None if out["objectness"] is None else [o.detach() for o in out["objectness"]],
    }
    proposals = out.get("proposals")
    del out
    student = model(images, targets, skip=(True,) * n, distill=True, proposals=proposals)
    base_detection = sum(student["losses"].values())
    feature = feature_term(student["features"], teacher["features"])
    prediction = prediction_term(det.kind, student, teacher, distill.temperature)
    loss_base = base_detection + distill.feature_weight * feature + distill.prediction_weight * prediction
    if distributed:
        tie = unused_parameters(model, (True,) * n) if tie_params is None else tie_params
        if tie:
            loss_base = loss_base + 0.0 * sum(p.sum() for p in tie)
    loss_base.backward()
    return StepLosses(
        loss_super.detach(), loss_base.detach(), base_detection.detach(), feature.detach(), prediction.detach()
    )


def plain_step(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    targets: Sequence[Mapping[str, torch.Tensor]],
    skip: tuple[bool, ...],
    tie_params: list[nn.Parameter] | None = None,
) -> torch.Tensor:
    """One ordinary training pass of sub-network ``skip`` (detection losses only, one backward); returns the
    loss, detached. Under DDP the parameters ``skip`` leaves idle are tied in as in :func:`detection_step`."""
    loss = sum(model(images, targets, skip=skip).values())
    if isinstance(model, DistributedDataParallel):
        tie = unused_parameters(model, skip) if tie_params is None else tie_params
        if tie:
            loss = loss + 0.0 * sum(p.sum() for p in tie)
    loss.backward()
    return loss.detach()
