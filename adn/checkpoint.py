"""Loading weights: our own checkpoints, torchvision state dicts and the published ADN checkpoints.

The published ADN files keep torchvision's names and call a mandatory block's second norm set
``<norm>_skip`` (``layer1.0.bn1_skip.weight``, ``encoder.layers.encoder_layer_0.ln_1_skip.weight``); here
that twin lives inside the norm as ``<norm>.skip_norm`` (``layer1.0.bn1.skip_norm.weight``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

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
