"""Training and validation samplers: orders that depend only on (seed, epoch), repeated augmentation, and the
resumable wrapper that hands every sample its seed."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, RandomSampler, Sampler, SequentialSampler

from .seeding import sample_seed

__all__ = ["RASampler", "ResumableSampler", "SeededRandomSampler", "build_samplers"]


class SeededRandomSampler(RandomSampler):
    """RandomSampler whose order depends only on ``(seed, epoch)``: call ``set_epoch`` like a
    DistributedSampler, and a resumed run sees the same order as an uninterrupted one."""

    def __init__(self, data_source: Dataset, seed: int = 0) -> None:
        super().__init__(data_source, generator=torch.Generator().manual_seed(seed))
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        self.generator.manual_seed(self.seed + self.epoch)
        return super().__iter__()


class RASampler(Sampler[int]):
    """Repeated-augmentation sampler (Hoffer et al. 2020; DeiT): every selected image appears ``repetitions``
    times per epoch, the copies going to different replicas (so each copy is augmented differently).

    Each replica yields ``ceil(len(dataset) / num_replicas)`` indices per epoch — as many as a
    DistributedSampler, so an epoch has the usual number of steps and covers about ``1/repetitions`` of the
    images, each ``repetitions`` times. ``num_replicas``/``rank`` default to the process group's.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        repetitions: int = 3,
    ) -> None:
        if num_replicas is None or rank is None:
            if not (dist.is_available() and dist.is_initialized()):
                raise RuntimeError("RASampler needs num_replicas and rank without an initialised process group")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        if repetitions < 1:
            raise ValueError(f"--ra-reps must be >= 1, got {repetitions}")
        self.dataset = dataset
        self.num_replicas, self.rank = num_replicas, rank
        self.shuffle, self.seed, self.repetitions = shuffle, seed, repetitions
        self.epoch = 0
        n = len(dataset)
        self.num_samples = math.ceil(n * repetitions / num_replicas)  # per replica, before truncation
        self.total_size = self.num_samples * num_replicas
        self.num_selected = math.ceil(n / num_replicas)  # what each replica yields

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        # consecutive copies of an index are dealt to consecutive replicas by the strided slice below
        indices = order.repeat_interleave(self.repetitions).tolist()
        pad = self.total_size - len(indices)
        indices += (indices * math.ceil(pad / len(indices)))[:pad] if pad > 0 else []
        return iter(indices[self.rank : self.total_size : self.num_replicas][: self.num_selected])

    def __len__(self) -> int:
        return self.num_selected

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class ResumableSampler(Sampler[tuple[int, int]]):
    """Wraps a training sampler to make an epoch reproducible piece by piece.

    Yields ``(index, seed)`` keys, ``seed`` = :func:`sample_seed` of the position in the epoch's stream, for
    :class:`SeededDataset`; ``skip(n)`` starts the current epoch at position ``n`` (resuming mid-epoch: the
    consumed samples are neither loaded nor augmented again). The order comes from the wrapped sampler, which
    depends only on (seed, epoch) for every sampler :func:`build_samplers` makes.
    """

    def __init__(self, sampler: Sampler, seed: int = 0, rank: int = 0) -> None:
        self.sampler, self.seed, self.rank = sampler, seed, rank
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its beginning (call ``skip`` afterwards to start later)."""
        self.epoch, self.start = epoch, 0
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def skip(self, n: int) -> None:
        self.start = n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for position, index in enumerate(self.sampler):
            if position >= self.start:
                yield index, sample_seed(self.seed, self.epoch, self.rank, position)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.start)


def build_samplers(
    train_set: Dataset,
    val_set: Dataset,
    *,
    distributed: bool,
    ra_sampler: bool = False,
    ra_reps: int = 3,
    seed: int = 0,
) -> tuple[Sampler, Sampler]:
    """Train and val samplers. Every train sampler has ``set_epoch(epoch)``; call it before each epoch.

    Distributed: RASampler (``ra_sampler``) or DistributedSampler for training, DistributedSampler(shuffle=False)
    for validation. Single process: SeededRandomSampler (RASampler with one replica if ``ra_sampler``) and
    SequentialSampler.
    """
    if distributed:
        train: Sampler = (
            RASampler(train_set, shuffle=True, seed=seed, repetitions=ra_reps)
            if ra_sampler
            else DistributedSampler(train_set, shuffle=True, seed=seed)
        )
        return train, DistributedSampler(val_set, shuffle=False)
    train = (
        RASampler(train_set, num_replicas=1, rank=0, seed=seed, repetitions=ra_reps)
        if ra_sampler
        else SeededRandomSampler(train_set, seed=seed)
    )
    return train, SequentialSampler(val_set)
