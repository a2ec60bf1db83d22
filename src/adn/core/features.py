"""The outputs of chosen stages of one sub-network's forward pass: pooled, what feature self-distillation compares
(:func:`capture_stage_outputs`); unpooled, what ``forward_intermediates`` returns and a detector's FPN reads
(:func:`stage_outputs`).

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

from .tree import substitute


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


class _Done(Exception):
    """Raised by the last tap of a call that wants the stage outputs only: the rest of the network is not needed."""


class _Tap(nn.Module):
    """A block whose output is also appended to one call's list (``stop``: then ends the forward pass)."""

    def __init__(self, block: nn.Module, sink: list[torch.Tensor], stop: bool) -> None:
        super().__init__()
        self.block, self.sink, self.stop = block, sink, stop

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        y = self.block(*args)
        self.sink.append(y)
        if self.stop:
            raise _Done
        return y


def stage_outputs(
    net: nn.Module, path: nn.Module, x: torch.Tensor, skip: Sequence[bool], stages: Sequence[int], only: bool = True
) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
    """``(features, outputs)``: the unpooled outputs of ``stages`` (ascending) when ``path`` -- sub-network ``skip``
    of ``net`` -- runs ``x``, and its ``forward_features_plain`` output (``None`` with ``only``: the pass then stops
    after the last of ``stages``). The output blocks are swapped for taps in a copy of the path's containers made
    for this call, so nothing is written to the model: calls may run at once in threads."""
    names = stage_output_blocks(net, skip, stages)
    sink: list[torch.Tensor] = []
    tapped, _ = substitute(path, {n: _Tap(path.get_submodule(n), sink, only and n == names[-1]) for n in names})
    features = None
    with contextlib.suppress(_Done):
        features = tapped.forward_features_plain(x)
    if len(sink) != len(names):
        raise RuntimeError(f"adn: the forward pass ran {len(sink)} of the {len(names)} stage blocks it should")
    return features, sink


__all__ = ["capture_stage_outputs", "pool_channels", "stage_output_blocks", "stage_outputs"]
