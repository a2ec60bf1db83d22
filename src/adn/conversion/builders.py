"""Converted models by name (``tv:<name>``, ``timm:<name>``) and the original's weights loaded into them."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..core.network import AdaptiveDepthNet
from .convert import convert

_PREFIXES = {"tv": "torchvision", "torchvision": "torchvision", "timm": "timm"}


def _unknown(kind: str, name: str, known: Sequence[str]) -> ValueError:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ValueError(f"unknown {kind} model {name!r}{hint}")


def create_converted(
    spec: str,
    num_classes: int = 1000,
    *,
    num_stages: int | None = None,
    shared_norms: Sequence[str] | None = None,
    **kwargs: Any,
) -> AdaptiveDepthNet:
    """Build a randomly initialised torchvision or timm classifier and :func:`convert` it.

    ``spec``: ``"tv:<name>"`` / ``"torchvision:<name>"`` (``torchvision.models.get_model(name, weights=None,
    num_classes=..., **kwargs)``) or ``"timm:<name>"`` (``timm.create_model(name, pretrained=False,
    num_classes=..., **kwargs)``). ``num_stages`` and ``shared_norms`` go to :func:`convert`; other keyword
    arguments to the builder (``image_size``, ``drop_path_rate`` ...). Load the original's weights with
    :func:`load_pretrained`. Errors are one line (unknown prefix or name, timm not installed).
    """
    prefix, sep, name = spec.partition(":")
    if not sep or prefix not in _PREFIXES or not name:
        raise ValueError(
            f"invalid model spec {spec!r}: use 'tv:<name>' or 'torchvision:<name>' for torchvision models, "
            "'timm:<name>' for timm models (e.g. 'tv:resnet18', 'timm:convnext_atto')"
        )
    if _PREFIXES[prefix] == "torchvision":
        import torchvision.models as tvm

        known = tvm.list_models(module=tvm)  # the classifiers (not detection, segmentation, video ...)
        if name not in known:
            raise _unknown("torchvision classification", name, known)
        model = tvm.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    else:
        try:
            import timm
        except ImportError:
            raise ValueError(f"cannot build {spec!r}: timm is not installed (pip install timm)") from None
        if not timm.is_model(name):
            raise _unknown("timm", name, timm.list_models())
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    return convert(model, num_stages=num_stages, shared_norms=shared_norms)


def load_pretrained(
    model: AdaptiveDepthNet, source: str | Any | Mapping[str, torch.Tensor], *, weights_only: bool = True
) -> AdaptiveDepthNet:
    """Load the weights of the *unconverted* model into converted ``model`` (its super-net): a plain state dict
    with torchvision's/timm's names, a checkpoint holding one under ``"model"`` or ``"state_dict"``, as a
    file (``torch.save`` or ``*.safetensors``) or a mapping. Each twin norm becomes a copy of its main norm.
    adn's own checkpoints of the converted model (twins included) load too. Returns ``model``.
    """
    from ..core.checkpoint import extract_state_dict, init_twins, load_checkpoint, load_state_dict_compat

    what = "the state dict" if isinstance(source, Mapping) else str(source)
    obj = source if isinstance(source, Mapping) else load_checkpoint(source, weights_only=weights_only)
    if isinstance(obj, Mapping) and "model" not in obj and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]  # timm's training checkpoints
    state_dict = extract_state_dict(obj, what)
    expected = model.state_dict()
    fits = all(k in expected and getattr(v, "shape", None) == expected[k].shape for k, v in state_dict.items())
    if fits and all(k in state_dict or ".skip_norm." in k or k.startswith("calibration.") for k in expected):
        # The original's names as they are (no renaming of published ``<norm>_skip`` twins: timm has norms
        # called ``*_skip``); twins the file lacks start as copies of their main norms.
        model.load_state_dict(state_dict, strict=False)
        init_twins(model, state_dict)
        return model
    try:
        load_state_dict_compat(model, state_dict)  # DDP/compile prefixes, published twin names ...
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    return model


__all__ = ["create_converted", "load_pretrained"]
