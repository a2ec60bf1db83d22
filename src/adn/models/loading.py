"""Build a model from a weights file: the one path that ``adn eval``, ``calibrate``, ``bench``, ``export`` and
``predict`` share (class count from the file, EMA weights on request, the checkpoint's inference metadata)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import nn
from torch.optim.swa_utils import AveragedModel

from ..core.checkpoint import convert_published_state_dict, extract_state_dict, load_checkpoint, load_model_state
from ..core.heads import last_linear_name
from ..training.optim import load_ema_state
from .registry import create_model, is_converted_name, model_info


def _classifier_name(name: str) -> str:
    if not is_converted_name(name):
        return model_info(name).classifier
    probe = create_model(name, num_classes=1000)  # a converted model: find its last linear layer
    return last_linear_name(probe)


def class_count(name: str, checkpoint: object, path: str | os.PathLike) -> int | None:
    """The class count of the weights in ``checkpoint``: its metadata, else its classifier's shape."""
    meta = checkpoint_meta(checkpoint)
    if meta.get("num_classes"):
        return int(meta["num_classes"])
    state_dict = convert_published_state_dict(extract_state_dict(checkpoint, path))
    weight = state_dict.get(f"{_classifier_name(name)}.weight")
    return int(weight.shape[0]) if weight is not None else None


def checkpoint_meta(checkpoint: object) -> dict[str, Any]:
    """What a checkpoint records for inference (class names, input size, normalisation ...), or {}."""
    meta = checkpoint.get("meta") if isinstance(checkpoint, Mapping) else None
    return dict(meta) if isinstance(meta, Mapping) else {}


def build_model(
    name: str,
    weights: str | os.PathLike | None = None,
    num_classes: int | None = None,
    *,
    ema: bool = False,
    unsafe_pickle: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """``create_model(name)`` with ``weights`` loaded (the EMA weights of a training checkpoint with ``ema``).

    The class count is ``num_classes``, else the file's, else 1000. Returns the model and the checkpoint's
    inference metadata (empty for plain state dicts). Errors are one line naming the file and the fix.
    """
    if weights is None:
        return create_model(name, num_classes=num_classes or 1000), {}
    checkpoint = load_checkpoint(weights, weights_only=not unsafe_pickle)
    if num_classes is None:
        num_classes = class_count(name, checkpoint, weights) or 1000
    model = create_model(name, num_classes=num_classes)
    if ema:
        if not isinstance(checkpoint, Mapping) or checkpoint.get("model_ema") is None:
            raise ValueError(f"{weights} has no EMA weights ('model_ema'); drop --model-ema")
        averaged = AveragedModel(model, use_buffers=True)
        load_ema_state(averaged, checkpoint["model_ema"])
        model = averaged.module
    else:
        load_model_state(model, checkpoint, weights, name)
    return model, checkpoint_meta(checkpoint)


__all__ = ["build_model", "checkpoint_meta", "class_count"]
