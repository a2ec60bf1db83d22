"""What a classifier's head is, found once (the layer a model declares, ``model.info.classifier``, else its last
``nn.Linear``), and the timm model contract every adaptive-depth model keeps on top of it: ``forward_features``
(the unpooled map of a sub-network), ``forward_intermediates`` (its stage outputs), ``forward_head``,
``get_classifier``, ``reset_classifier``, ``num_features``, ``set_grad_checkpointing``.

An architecture declares where its features end and its head begins with :meth:`forward_features_plain` and
:meth:`forward_head_plain` (their composition is its ``forward``); a converted timm model uses timm's own, run on the
sub-network's path; any other converted model is split at its last global average pooling layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .features import stage_outputs
from .skipconfig import SkipLike

_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool1d)


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


class Checkpointed(nn.Module):
    """A block whose activations are recomputed in the backward pass (training only): what
    ``set_grad_checkpointing`` puts into the sub-network paths of a model without timm's own mechanism."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            return checkpoint(self.block, *args, use_reentrant=False)
        return self.block(*args)


class _Stop(Exception):
    def __init__(self, features: torch.Tensor) -> None:
        self.features = features


class _NumFeatures:
    """``model.num_features``: channels of the pooled features the classifier reads (kept after
    ``reset_classifier(0)``). Read-only and non-data, so a timm model's own ``num_features`` attribute wins."""

    def __get__(self, model, owner=None) -> int:
        if model is None:
            return self  # type: ignore[return-value]
        head = model.get_classifier()
        return head.in_features if isinstance(head, nn.Linear) else model.__dict__["_num_features"]


class ClassifierMixin:
    """The timm model contract of an adaptive-depth model, each method on the chosen sub-network."""

    def classifier_name(self) -> str:
        """Name of the classifier layer (``model.info.classifier``, else the last ``nn.Linear``), found once: after
        ``reset_classifier(0)`` the last ``nn.Linear`` would be another layer."""
        name = self.__dict__.get("_classifier_name")
        if name is None:
            name = self.__dict__["_classifier_name"] = classifier_name(self)  # type: ignore[arg-type]
        return name

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.classifier_name())  # type: ignore[attr-defined]

    num_features = _NumFeatures()

    def reset_classifier(self, num_classes: int, *args, **kwargs) -> None:
        """A fresh classifier for ``num_classes`` classes; ``0``: ``Identity``, so the model returns the pooled
        pre-logits features (timm's convention). A timm model's own ``reset_classifier`` runs when it has one."""
        own = _original(self, "reset_classifier")
        if own is not None:
            own(self, num_classes, *args, **kwargs)
            return
        old = self.get_classifier()
        features = self.num_features
        self.__dict__["_num_features"] = features
        parent, _, leaf = self.classifier_name().rpartition(".")
        device, dtype = (old.weight.device, old.weight.dtype) if isinstance(old, nn.Linear) else (None, None)
        new = nn.Linear(features, num_classes, device=device, dtype=dtype) if num_classes else nn.Identity()
        setattr(self.get_submodule(parent) if parent else self, leaf, new)  # type: ignore[attr-defined]

    def forward_features(self, x: torch.Tensor, skip: SkipLike = None, **kwargs) -> torch.Tensor:
        """The unpooled features of sub-network ``skip`` (default: ``model.skip``): what its head pools. Other
        keywords go to a timm model's own ``forward_features`` (``attn_mask`` ...), which its forward calls."""
        return self.subnet(skip).forward_features_plain(x, **kwargs)  # type: ignore[attr-defined]

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        skip: SkipLike = None,
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The unpooled stage outputs of sub-network ``skip`` (default: ``model.skip``), as timm's
        ``forward_intermediates``: ``indices`` are stages (``None``: all; ``n``: the last ``n``; a list: those). A
        stage's output is that of its last block that runs in ``skip``. Returns ``(forward_features(x), outputs)``,
        or only the outputs with ``intermediates_only`` (the pass then stops after the last one)."""
        stages = _stage_indices(indices, self.num_stages)  # type: ignore[attr-defined]
        skip = self.resolve_skip(skip)  # type: ignore[attr-defined]
        path = self.subnet(skip)  # type: ignore[attr-defined]
        features, outputs = stage_outputs(self, path, x, skip, stages, only=intermediates_only)  # type: ignore[arg-type]
        return outputs if intermediates_only else (features, outputs)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False, skip: SkipLike = None, **kwargs) -> torch.Tensor:
        """Sub-network ``skip``'s head on :meth:`forward_features`' output: pooled, then classified (``pre_logits``:
        the pooled features the classifier reads)."""
        return self.subnet(skip).forward_head_plain(x, pre_logits, **kwargs)  # type: ignore[attr-defined]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of keeping them (less memory, one more
        forward): timm's own mechanism for a converted timm model, else every block of the sub-network paths."""
        own = _original(self, "set_grad_checkpointing")
        if own is not None:
            own(self, enable)
        else:
            self.grad_checkpointing = enable
            self.__dict__["_checkpoint_blocks"] = enable
        self.__dict__["_paths_valid"] = False  # the paths are rebuilt with (or without) checkpointed blocks

    # ---- where an architecture's features end: override both in an architecture that knows
    def forward_features_plain(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        own = _original(self, "forward_features")
        if own is not None:
            return own(self, x, **kwargs)
        pool = self._global_pool()
        handle = pool.register_forward_pre_hook(lambda _, args: _raise(_Stop(args[0])))
        try:
            self.forward_plain(x)  # type: ignore[attr-defined]
        except _Stop as stop:
            return stop.features
        finally:
            handle.remove()
        raise RuntimeError(f"{type(self).__name__}: its global pooling layer did not run")

    def forward_head_plain(self, x: torch.Tensor, pre_logits: bool = False, **kwargs) -> torch.Tensor:
        own = _original(self, "forward_head")
        if own is not None:
            return own(self, x, pre_logits=pre_logits, **kwargs)
        x = torch.flatten(self._global_pool()(x), 1)
        return x if pre_logits else self.get_classifier()(x)

    def _global_pool(self) -> nn.Module:
        pools = [m for m in self.modules() if isinstance(m, _POOLS)]  # type: ignore[attr-defined]
        if not pools:
            raise ValueError(
                f"{type(self).__name__} has no global pooling layer: declare where its features end with "
                "forward_features_plain / forward_head_plain"
            )
        return pools[-1]


def _stage_indices(indices: int | Sequence[int] | None, num_stages: int) -> list[int]:
    if indices is None:
        return list(range(num_stages))
    if isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise ValueError(f"indices={indices}: the last n stages needs 1 <= n <= {num_stages}")
        return list(range(num_stages - indices, num_stages))
    stages = sorted({int(i) % num_stages if -num_stages <= int(i) < num_stages else num_stages for i in indices})
    if not stages or stages[-1] >= num_stages:
        raise ValueError(
            f"indices must be stage numbers in 0..{num_stages - 1} (or negative from the end), got {indices}"
        )
    return stages


def _raise(exc: Exception) -> None:
    raise exc


def _original(model: nn.Module, name: str):
    """The converted model's original class's own ``name`` (timm's contract methods), else None."""
    original = getattr(type(model), "__adn_original__", None)
    return getattr(original, name, None) if original is not None else None


__all__ = ["Checkpointed", "ClassifierMixin", "classifier_name", "last_linear_name"]
