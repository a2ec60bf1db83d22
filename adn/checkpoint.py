"""Checkpoint files and weights: our own checkpoints, torchvision state dicts and the published ADN checkpoints.

The published ADN files keep torchvision's names and call a mandatory block's second norm set
``<norm>_skip`` (``layer1.0.bn1_skip.weight``, ``encoder.layers.encoder_layer_0.ln_1_skip.weight``); here
that twin lives inside the norm as ``<norm>.skip_norm`` (``layer1.0.bn1.skip_norm.weight``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .skip import init_skip_norms_from_main

_PUBLISHED_TWIN = re.compile(r"(^|\.)([A-Za-z0-9_]+?)_skip\.")


def convert_published_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename published ``<norm>_skip.<tensor>`` keys to ``<norm>.skip_norm.<tensor>``; strip DDP's
    ``module.`` prefix and torch.compile's ``_orig_mod.`` prefix. Other keys pass unchanged."""
    out = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[_PUBLISHED_TWIN.sub(r"\1\2.skip_norm.", key)] = value
    return out


def load_state_dict_compat(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load our, torchvision's or a published ADN state dict into ``model``.

    A state dict without twins (e.g. torchvision's ImageNet weights) initialises each twin from its main norm.
    Any other missing or unexpected key is an error that names the keys.
    """
    state_dict = convert_published_state_dict(state_dict)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and ".skip_norm." not in k]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and hasattr(v, "shape") and v.shape != expected[k].shape
    ]
    problems = [
        f"{what} {len(keys)} keys (e.g. {', '.join(keys[:3])})"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch in", mismatched))
        if keys
    ]
    if problems:
        raise ValueError("weights do not fit this model (another architecture or class count?): " + "; ".join(problems))
    twins_missing = any(k not in state_dict for k in expected if ".skip_norm." in k)
    model.load_state_dict(state_dict, strict=False)
    if twins_missing:
        init_skip_norms_from_main(model)


# ------------------------------------------------------------------------------------------- checkpoint files
def save_checkpoint(obj: object, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a half-written file: write a temporary file in the same directory,
    flush it to disk, then atomically rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", weights_only: bool = True):
    """Load a checkpoint or state-dict file; one clear error line if it is missing or not a PyTorch file.

    ``weights_only`` loading also accepts the ``argparse.Namespace`` that reference-style checkpoints store
    under ``args``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as exc:  # pickle/zip/EOF errors all mean "not a readable checkpoint"
        text = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else ""
        detail = f"{type(exc).__name__}: {text[:160]}" if any(c.isalpha() for c in text) else type(exc).__name__
        raise ValueError(f"cannot read checkpoint {path} ({detail}); is it a corrupt, truncated or non-PyTorch file?") from exc


def extract_state_dict(obj: object, path: str | os.PathLike = "checkpoint") -> Mapping[str, torch.Tensor]:
    """The model state dict inside a loaded file: a raw state dict, or the ``model`` entry of a checkpoint."""
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if isinstance(obj, Mapping) and obj and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        return obj
    raise ValueError(f"{path} holds no model weights: expected a state dict or a checkpoint with a 'model' entry")


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a weights file into ``model``: a raw state dict, one of our checkpoints (``{"model": ...}``),
    torchvision's or a published ADN file (``<norm>_skip`` names). Returns ``model``."""
    load_state_dict_compat(model, extract_state_dict(load_checkpoint(path), path))
    return model
