"""FLOPs and parameter counts per sub-network, measured with ``torch.utils.flop_counter``.

Convention (the paper's): FLOPs are multiply-accumulates (MACs) of convolutions, linear layers and
matrix products, attention included, for one image; element-wise ops (norms, activations, softmax) are
not counted. ``FlopCounterMode`` counts 2 FLOPs per MAC, so its total is halved.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from .modules import used_parameters
from .network import SkipLike


@contextlib.contextmanager
def _countable_attention():
    # nn.MultiheadAttention's fused fast path and the fused CPU attention kernels are invisible to the
    # counter (ViT-B/16 would read ~11.3 G instead of 17.6 G). The math backend runs attention as plain
    # matmuls, which the counter sees.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def input_size(model: nn.Module, resolution: int | tuple[int, int] | None = None) -> tuple[int, int]:
    """``resolution`` as (height, width); by default the model's own (``model.info``, a ViT's ``image_size``), else
    224."""
    if resolution is None:
        info = getattr(model, "info", None)
        resolution = getattr(model, "image_size", None) or (info.input_size if info is not None else 224)
    return (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)  # type: ignore[return-value]


@torch.no_grad()
def count_flops_table(
    model: nn.Module, configs: Sequence[SkipLike], resolution: int | tuple[int, int] | None = None
) -> list[int]:
    """:func:`count_flops` of several sub-networks, run with meta-device stand-ins for the weights (shapes only:
    no arithmetic, nothing copied), so a full-size model's whole table takes well under a second."""
    tensors = itertools.chain(
        model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False)
    )
    meta = {name: torch.empty_like(t, device="meta") for name, t in tensors}
    x = torch.zeros(1, 3, *input_size(model, resolution), device="meta")
    was_training, counts = model.training, []
    model.eval()
    try:
        for skip in configs:
            with _countable_attention(), FlopCounterMode(display=False) as counter:
                torch.func.functional_call(model, meta, (x,), {"skip": model.resolve_skip(skip)})
            counts.append(counter.get_total_flops() // 2)
    finally:
        model.train(was_training)
    return counts


@torch.no_grad()
def count_flops(model: nn.Module, skip: SkipLike = None, resolution: int | tuple[int, int] | None = None) -> int:
    """Multiply-accumulates of one forward pass of sub-network ``skip`` on one ``resolution`` image."""
    skip = model.resolve_skip(skip)  # None: the model's default (model.skip), as in model(x)
    param = next(model.parameters())
    x = torch.zeros(1, 3, *input_size(model, resolution), device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()  # no running-statistics updates while counting
    try:
        with _countable_attention(), FlopCounterMode(display=False) as counter:
            model(x, skip=skip)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def count_params(model: nn.Module, skip: SkipLike = None) -> int:
    """Parameters a sub-network actually uses: skipped blocks and the idle norm set are excluded."""
    return sum(p.numel() for p in used_parameters(model, model.resolve_skip(skip)))


__all__ = ["count_flops", "count_flops_table", "count_params", "input_size"]
