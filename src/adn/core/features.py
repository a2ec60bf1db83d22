"""The pooled output of chosen stages of one sub-network's forward pass: what feature self-distillation compares.

A stage's output in sub-network ``skip`` is the output of its last block that runs there: its last skippable block
when the stage is not skipped, its last mandatory block when it is. It is captured by a forward hook on that block,
registered for one pass only (a path's blocks share their hook dicts with the model's, so the hook sees the block
whichever path runs it; DDP and autocast wrap the call unchanged).

Pooling: the mean over every dimension but the batch and the channels, to ``(N, C)``. Convolutional feature maps
are ``(N, C, H, W)``; token sequences ``(N, L, C)`` (ViT, class token included) and Swin's ``(N, H, W, C)`` maps
carry channels last -- a model says so with ``feature_channel_dim = -1``; without it, 4-d outputs are taken as
channels-first and 3-d ones as channels-last.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn


def stage_output_blocks(net: nn.Module, skip: Sequence[bool], stages: Sequence[int]) -> list[str]:
    """Name of the block whose output is stage ``i``'s output in sub-network ``skip``, for each ``i`` in ``stages``."""
    names = []
    for i in stages:
        mandatory, skippable = net.layout.stages[i]
        names.append(mandatory[-1] if skip[i] or not skippable else skippable[-1])
    return names


def pool_channels(output: torch.Tensor, channel_dim: int | None = None) -> torch.Tensor:
    """``(N, C)``: the mean of ``output`` over every dimension but the batch and ``channel_dim`` (see the module)."""
    if output.ndim == 2:
        return output
    if channel_dim is None:
        channel_dim = 1 if output.ndim == 4 else -1
    channel_dim %= output.ndim
    return output.mean(dim=[d for d in range(1, output.ndim) if d != channel_dim])


@contextlib.contextmanager
def capture_stage_outputs(
    net: nn.Module, skip: Sequence[bool], stages: Sequence[int], detach: bool = False
) -> Iterator[list[torch.Tensor]]:
    """Within the block, the next forward pass of sub-network ``skip`` of ``net`` (an adaptive-depth model; call it
    directly or through its DDP/compile wrapper) fills the yielded list with the pooled ``(N, C)`` outputs of
    ``stages``, in that order. ``detach``: store them without their graph (distillation targets)."""
    outputs: list[torch.Tensor] = []
    if not stages:
        yield outputs
        return
    channel_dim = getattr(net, "feature_channel_dim", None)
    found: dict[int, torch.Tensor] = {}

    def hook(position: int):
        def store(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            pooled = pool_channels(output, channel_dim)
            found[position] = pooled.detach() if detach else pooled

        return store

    handles = [
        net.get_submodule(name).register_forward_hook(hook(position))
        for position, name in enumerate(stage_output_blocks(net, skip, stages))
    ]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()
    if len(found) != len(handles):
        raise RuntimeError(f"adn: the forward pass ran {len(found)} of the {len(handles)} stage blocks it should")
    outputs.extend(found[i] for i in range(len(handles)))


__all__ = ["capture_stage_outputs", "pool_channels", "stage_output_blocks"]
