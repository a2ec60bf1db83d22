"""Per-sample random streams: each training sample's augmentation, and each batch's mixup/cutmix, draws from RNGs
seeded by its key, without leaving any trace on the process's global RNG state.

torchvision's transforms v2 draw from the global torch generator (and some from Python's ``random``), so a
sample cannot be given a generator of its own; instead :func:`seeded_rng` seeds the global CPU generators for
the duration of one sample and then puts back exactly the state it found. The training step that follows
(dropout, drop-path, ...) therefore draws from the stream the trainer seeded, whether the samples were loaded in
this process (``workers=0``) or in DataLoader workers.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["SeededDataset", "SeededSample", "batch_seed", "sample_seed", "seeded_rng"]


def sample_seed(seed: int, epoch: int, rank: int, position: int) -> int:
    """The RNG seed of one sample: a hash of (run seed, epoch, process rank, position in the epoch's stream)."""
    return int(np.random.SeedSequence([seed, epoch, rank, position]).generate_state(1, np.uint64)[0])


def batch_seed(seeds: Sequence[int]) -> int:
    """The RNG seed of one batch: a hash of its samples' seeds, in order."""
    return int(np.random.SeedSequence([int(s) for s in seeds]).generate_state(1, np.uint64)[0])


@contextlib.contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Run the block with torch's CPU generator and Python's ``random`` seeded from ``seed``, then restore both:
    what the block draws is a function of ``seed``, and the caller's streams continue as if it had never run.

    CUDA generators are neither seeded nor saved (transforms run on the CPU; ``torch.manual_seed`` would seed
    them too). The state is per process, not per thread: do not load samples from several threads at once.
    """
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        random.setstate(python_state)


class SeededSample(tuple):
    """A dataset item (a plain tuple such as ``(image, label)``) that carries the seed it was augmented with, so
    a collate function can seed the batch's own random choices from its samples' keys. It collates, pickles and
    unpacks like the plain tuple."""

    seed: int

    def __new__(cls, item: tuple, seed: int) -> SeededSample:
        sample = super().__new__(cls, item)
        sample.seed = seed
        return sample

    def __reduce__(self) -> tuple:
        return SeededSample, (tuple(self), self.seed)


class SeededDataset(Dataset):
    """Dataset indexed by :class:`~adn.data.ResumableSampler` keys ``(index, seed)``: loads
    ``dataset[index]`` under :func:`seeded_rng(seed) <seeded_rng>`, so a sample's augmentation is a function of
    (seed, epoch, rank, position) — whichever process or DataLoader worker loads it, and whether or not the run
    was interrupted before — and the global RNG state is left as it was.

    A plain-tuple item comes back as a :class:`SeededSample` carrying ``seed``, from which
    :class:`~adn.data.MixupCutmixCollate` seeds its batch (other items come back unchanged).
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with seeded_rng(seed):
            item = self.dataset[index]
        return SeededSample(item, seed) if type(item) is tuple else item
