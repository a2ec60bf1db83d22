"""How many torch threads a command uses on a CPU that other work may share (``--threads N|auto``).

Torch's intra-op parallel regions end at a barrier: with one thread per core and one of those cores busy with
another process, every convolution waits for the thread the scheduler has parked, and a 2-core machine with one
busy core ran the quick start 10x slower than idle, where one thread on the free core costs at most 2x. So
``auto`` (the default) counts the cores this process may run on, subtracts the ones other processes keep busy
at start-up (runnable tasks sampled for a fraction of a second), shares the rest among the processes of this
node (``LOCAL_WORLD_SIZE`` under torchrun), and never exceeds torch's own default.
"""

from __future__ import annotations

import math
import os
import time

import torch

from ..errors import UsageError

AUTO = "auto"
PROBE_SECONDS = 0.2  # long enough to average out a burst, short next to any command
PROBE_SAMPLES = 20
#: torch's own default (physical cores), read before any command changes it: the most ``auto`` picks
TORCH_DEFAULT = torch.get_num_threads()

__all__ = ["AUTO", "apply_threads", "choose_threads", "other_load", "parse_threads", "usable_cores"]


def choose_threads(cores: int, load: float, processes: int = 1, cap: int | None = None) -> int:
    """Intra-op threads for one of ``processes`` processes sharing ``cores`` cores, ``load`` of which other work
    keeps busy (runnable tasks, like a load average): one thread per free core, at least one, at most ``cap``.

    A core counts as busy from half a task on (a job running half the time still stalls every barrier it lands
    on). Pure: :func:`other_load` and :func:`usable_cores` measure the machine."""
    if cores < 1 or processes < 1:
        raise ValueError(f"cores and processes must be >= 1, got {cores} and {processes}")
    busy = math.floor(max(0.0, load) + 0.5)
    threads = max(1, (cores - busy) // processes)
    return max(1, min(threads, cap)) if cap is not None else threads


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. under ``taskset`` or a container's cpuset)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def other_load(seconds: float = PROBE_SECONDS, samples: int = PROBE_SAMPLES, path: str = "/proc/loadavg") -> float:
    """Mean number of runnable tasks other than this one over ``seconds`` (``/proc/loadavg``'s running count,
    which includes the reader); 0.0 where that file does not exist (not Linux)."""
    counts = []
    for i in range(samples):
        try:
            with open(path) as f:
                running = int(f.read().split()[3].split("/")[0])
        except (OSError, IndexError, ValueError):
            return 0.0
        counts.append(running - 1)  # this process, reading
        if i + 1 < samples:
            time.sleep(seconds / samples)
    return max(0.0, sum(counts) / len(counts))


def parse_threads(value: str | int | None) -> int | None:
    """``--threads``: a positive count, ``auto`` or None (-> None, meaning auto)."""
    if value is None or value == AUTO:
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise UsageError(f"--threads takes a number >= 1 or 'auto', got {value!r}")
    return n


def apply_threads(value: str | int | None = AUTO, probe_seconds: float = PROBE_SECONDS) -> int:
    """Set torch's intra-op threads from ``--threads`` (a count, or ``auto``/None: :func:`choose_threads` on
    this machine now, the load probed for ``probe_seconds``); returns the count set."""
    n = parse_threads(value)
    if n is None:
        processes = int(os.environ.get("LOCAL_WORLD_SIZE", 1) or 1)
        load = other_load(probe_seconds)
        n = choose_threads(usable_cores(), load, processes, cap=TORCH_DEFAULT)
    torch.set_num_threads(n)
    return n
