"""What a classifier's head is, found once: the layer a model declares (``model.info.classifier``), else its last
``nn.Linear``; and the timm-style conveniences every adaptive-depth model has on top of it."""

from __future__ import annotations

import torch
from torch import nn

from .skipconfig import SkipLike
from .tree import substitute


def last_linear_name(model: nn.Module) -> str:
    """Name of the last ``nn.Linear`` of ``model`` (the classifier of a model that declares none)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer: which layer is its classifier?")
    return names[-1]


def classifier_name(model: nn.Module) -> str:
    """Name of the classifier layer of ``model`` (``model.info.classifier``, else the last ``nn.Linear``)."""
    info = getattr(model, "info", None)
    if info is not None and info.classifier:
        return info.classifier
    return last_linear_name(model)


class ClassifierMixin:
    """timm-style methods of an adaptive-depth model: its classifier, a fresh one, the features it sees."""

    def classifier_name(self) -> str:
        """Name of the classifier layer (``model.info.classifier``, else the last ``nn.Linear``)."""
        return classifier_name(self)  # type: ignore[arg-type]

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a fresh one for ``num_classes`` classes (e.g. before fine-tuning)."""
        name = self.classifier_name()
        old = self.get_submodule(name)
        parent, _, leaf = name.rpartition(".")
        new = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)
        setattr(self.get_submodule(parent) if parent else self, leaf, new)

    def forward_features(self, x: torch.Tensor, skip: SkipLike = None) -> torch.Tensor:
        """What the classifier of sub-network ``skip`` sees: the pooled pre-logits features."""
        path, _ = substitute(self.subnet(skip), {self.classifier_name(): nn.Identity()})
        return path.forward_plain(x)


__all__ = ["ClassifierMixin", "classifier_name", "last_linear_name"]
