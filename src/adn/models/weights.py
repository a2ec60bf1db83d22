"""One way to load weights: :func:`load_weights` works out what a file (or state dict) holds -- one of our
checkpoints or weights files, torchvision's or timm's weights of the plain model, a published ADN checkpoint of the
reference code, a converted model's own -- and loads it into an adaptive model. ``create_model(weights=...)``,
``adn train --weights/--pretrained`` and ``adn.load_weights`` all come here."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from ..conversion.builders import load_pretrained
from ..core.checkpoint import load_checkpoint, load_model_state


def load_weights(
    model: nn.Module,
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    *,
    weights_only: bool = True,
    model_name: str | None = None,
) -> nn.Module:
    """Load ``source`` (a file: ``torch.save`` or ``*.safetensors``; or a state dict) into ``model``; returns it.

    Any of: our checkpoints (``{"model": ...}``) and weights files, torchvision's state dict of the plain model
    (twins start as copies of their main norms), a published ADN checkpoint (``<norm>_skip`` names), and for a
    converted model (``adn.convert``, ``tv:``/``timm:`` names) the unconverted model's weights with torchvision's or
    timm's names (timm's training checkpoints too). A file that fits no such layout is one error naming the keys
    (and, for a checkpoint of another architecture, the ``--model`` to use). ``weights_only=False`` allows legacy
    pickles (trusted files only); ``model_name``: ``model``'s registered name, for that error.
    """
    if hasattr(type(model), "__adn_original__"):  # converted: the original's names first, then ours
        return load_pretrained(model, source, weights_only=weights_only)
    what = "the state dict" if isinstance(source, Mapping) else source
    obj = source if isinstance(source, Mapping) else load_checkpoint(source, weights_only=weights_only)
    load_model_state(model, obj, what, model_name)
    return model


__all__ = ["load_weights"]
