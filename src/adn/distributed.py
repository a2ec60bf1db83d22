"""``torch.distributed`` helpers for the trainer (torchrun environment, rank-0-only output, metric reduction)."""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist


def is_dist_avail_and_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def init_distributed_mode(args: argparse.Namespace) -> None:
    """Join the process group described by torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or
    by an srun task's with ``args.world_size``/``args.dist_url`` (:func:`adn.multinode.process_group_spec`).

    Sets ``args.distributed``, ``args.rank``, ``args.world_size`` and ``args.gpu``; NCCL on CUDA, gloo on CPU.
    Without those variables this is a single-process run.
    """
    from .multinode import process_group_spec

    # torchrun's environment or an srun task, with --world-size/--dist-url (absent from library callers' args)
    spec = process_group_spec(os.environ, getattr(args, "world_size", None), getattr(args, "dist_url", "env://"))
    args.rank, args.world_size, args.gpu = 0, 1, None
    args.distributed = spec is not None
    if not args.distributed:
        return
    args.rank, args.world_size = spec.rank, spec.world_size
    cuda = str(args.device).startswith("cuda")
    if cuda:
        args.gpu = spec.local_rank
        torch.cuda.set_device(args.gpu)
        args.device = f"cuda:{args.gpu}"
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend=backend, init_method=spec.init_method, world_size=args.world_size, rank=args.rank)
    dist.barrier()


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
