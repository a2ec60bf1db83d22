"""Per-batch metrics without host synchronisation (top-k hits as device tensors), and progress reports: what the
training epoch and the evaluation loop share."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

import torch

from ..runtime.distributed import is_main_process

T = TypeVar("T")


def accuracy(output: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...] = (1,)) -> list[float]:
    """Top-k accuracies in percent (host floats); soft (mixup) targets count their arg-max class."""
    return [c.item() * 100.0 / output.shape[0] for c in correct_topk(output, target, topk)]


def correct_topk(output: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...]) -> list[torch.Tensor]:
    """Number of samples whose target is in the top-k, per k, as device tensors (no host sync)."""
    with torch.no_grad():
        if target.ndim == 2:
            target = target.argmax(dim=1)
        maxk = min(max(topk), output.shape[1])
        hit = output.topk(maxk, dim=1).indices.eq(target[:, None])
        return [hit[:, : min(k, maxk)].any(dim=1).sum(dtype=torch.float64) for k in topk]


def interactive() -> bool:
    """Whether progress bars belong on stderr: rank 0 of the run, writing to a terminal (not a log file)."""
    return is_main_process() and sys.stderr.isatty()


def track(items: Iterable[T], desc: str, unit: str, enabled: bool = True) -> Iterable[T]:
    """``items`` behind a tqdm bar with an ETA when ``enabled`` and :func:`interactive`, else ``items`` as is."""
    if not (enabled and interactive()):
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


class Progress:
    """A tqdm bar on an interactive terminal (rank 0), else a plain line at every report; nothing when not
    ``enabled`` (``--quiet``)."""

    def __init__(self, header: str, total: int | None, enabled: bool = True) -> None:
        self.header, self.total, self.bar = header, total, None
        self.enabled = enabled and is_main_process()
        if enabled and interactive():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=header, leave=False, dynamic_ncols=True)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def report(self, done: int, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)
        elif self.enabled:
            print(f"{self.header} [{done}/{self.total or '?'}]  {text}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


__all__ = ["Progress", "accuracy", "correct_topk", "interactive", "track"]
