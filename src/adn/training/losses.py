"""The self-distillation objective of adaptive depth networks (Kang & Lee, NeurIPS 2024).

Each training step: the super-net learns from the labels, ``alpha * CE(super(x), y)``; the base-net mimics the
super-net, ``(1 - alpha) * T^2 * KL(softmax(super(x)/T) || softmax(base(x)/T))`` with the super-net's output
detached -- by default over the super-net's top-500 classes of each image, as the reference implementation does.

Two options of the reference of today (``docs/training.md``):

- **feature self-distillation** (``features=True``, ``--fpn``): the base-net also mimics the super-net's stage
  outputs, each pooled to ``(N, C)`` (:mod:`adn.core.features`) and distilled channel-wise,
  ``(1 - alpha) * (KD_logits + sum_k T^2 * KL(softmax(super_k/T) || softmax(base_k/T)))``. By default the stages
  are every stage but the first: for ResNets ``layer2``-``layer4``, exactly the reference's term.
- **an external teacher** (:class:`TeacherDistillation`, ``--teacher``): a frozen network teaches the super-net,
  ``alpha * (0.9 * T^2 * KL(teacher || super) + 0.1 * CE(super, y))`` over the teacher's top-k classes, and the
  super-net teaches the base-net as above; T = 2 for both terms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..core.features import capture_stage_outputs
from ..core.modules import unwrap

#: the reference distils over the super-net's top-500 classes of each image (all classes below 500)
DEFAULT_TOPK = 500


def distillation_loss(
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


def feature_distillation_loss(
    teacher_features: Sequence[torch.Tensor], student_features: Sequence[torch.Tensor], temperature: float = 1.0
) -> torch.Tensor:
    """``sum_k T^2 * KL(softmax(teacher_k/T) || softmax(student_k/T))`` over pooled ``(N, C)`` features, softmax over
    the channels, batch-mean KL, the teacher's features detached."""
    if len(teacher_features) != len(student_features):
        raise ValueError(f"{len(teacher_features)} teacher features vs {len(student_features)} student features")
    terms = [distillation_loss(t, s, temperature) for t, s in zip(teacher_features, student_features, strict=True)]
    return torch.stack(terms).sum()


@dataclass(frozen=True)
class SelfDistillation:
    """The two losses of one self-distillation step: ``alpha`` weighs the super-net's cross-entropy, ``1 - alpha``
    the base-net's distillation at ``temperature`` over the teacher's ``topk`` classes (None: all).

    ``features``: the base-net also distils the super-net's pooled stage outputs (``--fpn``): those of
    ``feature_stages`` (negative indices count from the end), by default every stage but the first.
    """

    alpha: float = 0.5
    temperature: float = 1.0
    topk: int | None = DEFAULT_TOPK
    features: bool = False
    feature_stages: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha (--subpath-alpha) must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise ValueError(f"temperature (--subpath-temp) must be > 0, got {self.temperature}")
        if self.topk is not None and self.topk < 1:
            raise ValueError(f"topk (--kd-topk) must be >= 1, got {self.topk}")

    def distilled_stages(self, num_stages: int) -> tuple[int, ...]:
        """The stages whose outputs the base-net distils (none without ``features``)."""
        if not self.features:
            return ()
        chosen = range(1, num_stages) if self.feature_stages is None else self.feature_stages
        for s in chosen:
            if not -num_stages <= s < num_stages:
                raise ValueError(f"feature stage {s}: the model has {num_stages} stages")
        return tuple(sorted({s % num_stages for s in chosen}))

    def super_loss(self, logits: torch.Tensor, target: torch.Tensor, criterion) -> torch.Tensor:
        """``alpha * criterion(super-net logits, target)``."""
        return self.alpha * criterion(logits, target)

    def base_loss(
        self,
        teacher_logits: torch.Tensor,
        student_logits: torch.Tensor,
        teacher_features: Sequence[torch.Tensor] = (),
        student_features: Sequence[torch.Tensor] = (),
    ) -> torch.Tensor:
        """``(1 - alpha) * T^2 * KL(teacher || student)`` over the teacher's top-k classes, plus the pooled
        features' terms (:func:`feature_distillation_loss`) when given."""
        loss = distillation_loss(teacher_logits, student_logits, self.temperature, self.topk)
        if teacher_features or student_features:
            loss = loss + feature_distillation_loss(teacher_features, student_features, self.temperature)
        return (1 - self.alpha) * loss

    # ---- the two passes of a step (adn.distillation_step runs them; DDP- and autocast-agnostic)
    def super_pass(
        self, model: nn.Module, images: torch.Tensor, target: torch.Tensor, criterion
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Super-net forward: its (weighted) loss, its logits, and its pooled stage outputs (detached; empty
        without ``features``)."""
        net = unwrap(model)
        skip = (False,) * net.num_stages
        with capture_stage_outputs(net, skip, self.distilled_stages(net.num_stages), detach=True) as features:
            logits = model(images, skip=skip)
        return self._super_objective(logits, target, criterion, images), logits, features

    def base_pass(
        self, model: nn.Module, images: torch.Tensor, super_logits: torch.Tensor, super_features: Sequence = ()
    ) -> torch.Tensor:
        """Base-net forward: its (weighted) distillation loss from the super-net's detached outputs."""
        net = unwrap(model)
        skip = (True,) * net.num_stages
        with capture_stage_outputs(net, skip, self.distilled_stages(net.num_stages)) as features:
            logits = model(images, skip=skip)
        return self.base_loss(super_logits, logits, super_features, features)

    def _super_objective(self, logits: torch.Tensor, target: torch.Tensor, criterion, images: torch.Tensor):
        return self.super_loss(logits, target, criterion)


@dataclass(frozen=True)
class TeacherDistillation(SelfDistillation):
    """Self-distillation with an external ``teacher`` (frozen, eval mode; see
    :func:`~adn.training.teacher.load_teacher`), as the
    reference's ``train_adn_distill.py``: the super-net's loss is ``alpha * (teacher_weight * T^2 * KL(teacher ||
    super) + (1 - teacher_weight) * CE(super, y))`` over the teacher's top-k classes; the base-net distils the
    super-net as in :class:`SelfDistillation`. T = 2 for both terms by default, as there."""

    temperature: float = 2.0
    teacher: nn.Module | None = field(default=None, compare=False, repr=False)
    teacher_weight: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.teacher is None:
            raise ValueError(
                "TeacherDistillation needs a teacher: adn.training.teacher.load_teacher(ARCH, WEIGHTS, classes)"
            )
        if not 0.0 <= self.teacher_weight <= 1.0:
            raise ValueError(f"teacher_weight must be in [0, 1], got {self.teacher_weight}")

    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's logits of ``images`` (no graph), under the caller's autocast setting."""
        with torch.no_grad():
            return self.teacher(images)

    def super_loss_from_teacher(
        self, logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor, criterion
    ) -> torch.Tensor:
        kd = distillation_loss(teacher_logits, logits, self.temperature, self.topk)
        return self.alpha * (self.teacher_weight * kd + (1 - self.teacher_weight) * criterion(logits, target))

    def _super_objective(self, logits: torch.Tensor, target: torch.Tensor, criterion, images: torch.Tensor):
        return self.super_loss_from_teacher(logits, self.teacher_logits(images), target, criterion)


# the name used before the loss became public
self_distillation_loss = distillation_loss

__all__ = [
    "DEFAULT_TOPK",
    "SelfDistillation",
    "TeacherDistillation",
    "distillation_loss",
    "feature_distillation_loss",
    "self_distillation_loss",
]
