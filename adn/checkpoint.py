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
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    twins_missing = [k for k in missing if ".skip_norm." in k]
    other_missing = [k for k in missing if ".skip_norm." not in k]
    if other_missing or unexpected:
        raise ValueError(
            "state dict does not fit this model: "
            + "; ".join(
                f"{what} {len(keys)} keys (e.g. {', '.join(keys[:3])})"
                for what, keys in (("missing", other_missing), ("unexpected", unexpected))
                if keys
            )
        )
    if twins_missing:
        init_skip_norms_from_main(model)
