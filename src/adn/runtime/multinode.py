"""Which process group a training process joins: torchrun's environment (single- or multi-node, elastic), or a
SLURM task started by ``srun`` directly, with torchvision's ``--world-size``/``--dist-url`` flags. No launcher of
our own: ``torchrun --nnodes N --rdzv-backend c10d --rdzv-endpoint HOST:PORT`` starts the processes (see
``docs/training.md``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessGroupSpec:
    rank: int
    world_size: int
    local_rank: int
    init_method: str


def process_group_spec(env: Mapping[str, str], world_size: int | None, dist_url: str) -> ProcessGroupSpec | None:
    """The process group of this process, or None for a single-process run.

    torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` come first (``--world-size``, if given, must agree); else a
    task of ``srun`` (``SLURM_PROCID``, ``SLURM_LOCALID``, world size ``--world-size``), which
    then needs ``--dist-url tcp://HOST:PORT`` unless ``MASTER_ADDR``/``MASTER_PORT`` are set for ``env://``.
    As in torchvision's reference, an srun task's world size is ``--world-size`` alone (default 1): a plain run
    inside a multi-task allocation stays one process.
    """
    if "RANK" in env and "WORLD_SIZE" in env:
        size = int(env["WORLD_SIZE"])
        if world_size is not None and world_size != size:
            raise ValueError(
                f"--world-size {world_size} differs from the launcher's WORLD_SIZE={size}; drop --world-size"
            )
        rank, local_rank = int(env["RANK"]), int(env.get("LOCAL_RANK", 0))
    elif "SLURM_PROCID" in env:
        size = world_size or 1
        rank, local_rank = int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", 0))
        if size > 1 and dist_url == "env://" and not ("MASTER_ADDR" in env and "MASTER_PORT" in env):
            raise ValueError(
                "a SLURM task without torchrun needs --dist-url tcp://HOST:PORT (the first node) or MASTER_ADDR "
                "and MASTER_PORT; or start it with srun torchrun (docs/training.md)"
            )
    else:
        if world_size not in (None, 1):
            raise ValueError(
                f"--world-size {world_size}: start the processes with torchrun (or srun); adn starts no processes"
            )
        return None
    if size <= 1:
        return None
    return ProcessGroupSpec(rank, size, local_rank, dist_url)


__all__ = ["ProcessGroupSpec", "process_group_spec"]
