"""``torch.distributed`` helpers for the trainer (torchrun environment, rank-0-only output, metric reduction)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .multinode import process_group_spec


def is_dist_avail_and_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def is_main_process() -> bool:
    return get_rank() == 0


@dataclass(frozen=True)
class DistState:
    """The process group this process belongs to (one process: ``distributed`` False, rank 0 of 1)."""

    distributed: bool = False
    rank: int = 0
    world_size: int = 1  #: the group's actual size (the ``--world-size`` flag is ``RunConfig.dist_world_size``)
    gpu: int | None = None  #: the local CUDA device index, under torchrun
    device: str = "cpu"  #: the device this process runs on (``cuda:<local rank>`` under torchrun)

    def flat(self) -> dict:
        """The fields a checkpoint's ``args`` records (the reference layout)."""
        return {"distributed": self.distributed, "rank": self.rank, "world_size": self.world_size, "gpu": self.gpu}


def init_distributed(device: str, world_size: int | None = None, dist_url: str = "env://") -> DistState:
    """Join the process group described by torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or
    the one of an srun task started without torchrun, of ``world_size`` processes at ``dist_url`` (torchvision's
    ``--world-size``/``--dist-url``; :func:`adn.runtime.multinode.process_group_spec`); NCCL on CUDA, gloo on CPU.
    Without either this is a single-process run on ``device``."""
    spec = process_group_spec(os.environ, world_size, dist_url)
    if spec is None:
        return DistState(device=str(device))
    gpu = None
    cuda = str(device).startswith("cuda")
    if cuda:
        gpu = spec.local_rank
        torch.cuda.set_device(gpu)
        device = f"cuda:{gpu}"
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend=backend, init_method=spec.init_method, world_size=spec.world_size, rank=spec.rank)
    dist.barrier()
    return DistState(True, spec.rank, spec.world_size, gpu, str(device))


def cleanup_distributed() -> None:
    if is_dist_avail_and_initialized():
        dist.destroy_process_group()


def reduce_sum(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Sum a list of numbers over all processes (identity in a single-process run)."""
    if not is_dist_avail_and_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
