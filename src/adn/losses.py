"""The self-distillation objective of adaptive depth networks (Kang & Lee, NeurIPS 2024).

Each training step: the super-net learns from the labels, ``alpha * CE(super(x), y)``; the base-net mimics the
super-net, ``(1 - alpha) * T^2 * KL(softmax(super(x)/T) || softmax(base(x)/T))`` with the super-net's output
detached -- by default over the super-net's top-500 classes of each image, as the reference implementation does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

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


@dataclass(frozen=True)
class SelfDistillation:
    """The two losses of one self-distillation step: ``alpha`` weighs the super-net's cross-entropy, ``1 - alpha``
    the base-net's distillation at ``temperature`` over the teacher's ``topk`` classes (None: all)."""

    alpha: float = 0.5
    temperature: float = 1.0
    topk: int | None = DEFAULT_TOPK

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha (--subpath-alpha) must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise ValueError(f"temperature (--subpath-temp) must be > 0, got {self.temperature}")
        if self.topk is not None and self.topk < 1:
            raise ValueError(f"topk (--kd-topk) must be >= 1, got {self.topk}")

    def super_loss(self, logits: torch.Tensor, target: torch.Tensor, criterion) -> torch.Tensor:
        """``alpha * criterion(super-net logits, target)``."""
        return self.alpha * criterion(logits, target)

    def base_loss(self, teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
        """``(1 - alpha) * T^2 * KL(teacher || student)`` over the teacher's top-k classes."""
        return (1 - self.alpha) * distillation_loss(teacher_logits, student_logits, self.temperature, self.topk)


# the name used before the loss became public
self_distillation_loss = distillation_loss

__all__ = ["DEFAULT_TOPK", "SelfDistillation", "distillation_loss", "self_distillation_loss"]
