"""A model's skip layout: which blocks of each stage are mandatory and which skippable, and -- by module name --
what the path of a skip config swaps (twins, inactive modules)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Stage:
    """One stage's blocks (modules of the model, in execution order): ``mandatory`` then ``skippable``."""

    mandatory: list[nn.Module]
    skippable: list[nn.Module]

    def __len__(self) -> int:
        return len(self.mandatory) + len(self.skippable)


@dataclass(frozen=True)
class SkipLayout:
    """What skipping does to a model, by module name (names survive module replacement, e.g. SyncBN).

    ``stages``: ``(mandatory block names, skippable block names)`` per stage; ``twins``: ``(norm name, stage)``
    -- the norm is replaced by its twin when that stage is skipped; ``inactive``: ``(module name, stage)`` --
    replaced by ``Identity`` when that stage is skipped (the reference Swin-T's drop-path in skipped stages).
    """

    stages: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]
    twins: tuple[tuple[str, int], ...]
    inactive: tuple[tuple[str, int], ...] = ()


__all__ = ["SkipLayout", "Stage"]
