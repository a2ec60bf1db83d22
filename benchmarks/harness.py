"""What every script in ``benchmarks/`` shares: the results file, the guard, and the one clock.

- :class:`Report`: a markdown results file in named slots, opened by the header every results file needs (date
  UTC, machine, cores, ``uptime``'s load averages at the start and the end, torch/torchvision/onnxruntime
  versions, the exact command line) and rewritten atomically after every change, so a killed run leaves its
  finished rows behind.
- :meth:`Report.guard`: one item's failure (or overrun, or late start under a time budget) becomes one line or
  one table row of the report, the traceback goes to stderr, and the run goes on.
- :class:`Stopwatch`, :func:`call_times`, :func:`min_ms`, :func:`interleaved_min_ms`: the only code in
  ``benchmarks/`` that reads the clock (``tests/test_benchmark_scripts.py`` checks that no other file does).
  Model forwards timed with ``torch.utils.benchmark`` go through the package (``adn.deploy.bench.time_forward``,
  ``switching_cost``).

Training helpers for the comparison benchmarks are in ``common.py``.
"""

from __future__ import annotations

import math
import os
import platform
import shlex
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TypeVar

import torch

T = TypeVar("T")


# ------------------------------------------------------------------------------------------------ the clock
def sync(device: torch.device | str | None) -> None:
    """Wait for ``device``'s queued work (CUDA kernels run asynchronously; the CPU needs nothing)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Seconds since it was made (or :meth:`restart`\\ ed), ``device`` synchronised before each reading; as a
    context manager it stops at the block's end::

        with Stopwatch() as t:
            train()
        print(t.seconds)
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device, self._stop = device, None
        self.restart()

    def restart(self) -> None:
        sync(self.device)
        self._start, self._stop = time.perf_counter(), None

    @property
    def seconds(self) -> float:
        if self._stop is not None:
            return self._stop - self._start
        sync(self.device)
        return time.perf_counter() - self._start

    def __enter__(self) -> Stopwatch:
        self.restart()
        return self

    def __exit__(self, *exc) -> None:
        sync(self.device)
        self._stop = time.perf_counter()


def call_times(
    fn: Callable[[], object], n: int, *, warmup: int = 1, device: torch.device | str | None = None, per_call=True
) -> tuple[float, list[float]]:
    """``(warm-up seconds, times)``: ``warmup`` untimed calls, then the seconds of each of ``n`` calls
    (``per_call``: ``device`` synchronised after each), or else one entry, the mean over ``n`` calls
    synchronised only at both ends (no call waits for the host)."""
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    sync(device)
    stamps = [time.perf_counter()]
    for _ in range(n):
        fn()
        if per_call:
            sync(device)
            stamps.append(time.perf_counter())
    if not per_call:
        sync(device)
        stamps.append(time.perf_counter())
    times = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return stamps[0] - start, times if per_call else [times[0] / max(1, n)]


def min_ms(fn: Callable[[], object], reps: int, *, warmup: int = 1, device=None) -> float:
    """The fastest of ``reps`` calls in ms, after ``warmup`` untimed ones: on a shared machine the minimum is
    the call that other work disturbed least."""
    return min(call_times(fn, reps, warmup=warmup, device=device)[1]) * 1e3


def interleaved_min_ms(fns: Mapping[str, Callable[[], object]], rounds: int, reps: int) -> dict[str, float]:
    """:func:`min_ms` of every function, in ``rounds`` interleaved rounds (each round times every function
    once), min over rounds: a drift in the machine's load hits every column alike."""
    best = dict.fromkeys(fns, math.inf)
    for _ in range(rounds):
        for key, fn in fns.items():
            best[key] = min(best[key], min_ms(fn, reps))
    return best


# ----------------------------------------------------------------------------------------------- the report
def load_average() -> str:
    """``uptime``'s three load averages (1, 5, 15 min)."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def versions() -> str:
    """Python, torch, torchvision, onnxruntime (when installed) versions and torch's thread count."""
    import importlib.metadata

    parts = [f"Python {platform.python_version()}", f"torch {torch.__version__}"]
    for name in ("torchvision", "onnxruntime"):
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{name} not installed")
    threads = torch.get_num_threads()
    return ", ".join(parts) + f"; {threads} torch thread{'s' * (threads != 1)}"


def table(*columns: str) -> list[str]:
    """A blank line and a markdown table's head."""
    return ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def cells(*values: object) -> str:
    """One markdown table row."""
    return "| " + " | ".join(str(v) for v in values) + " |"


class Report:
    """A markdown results file: the header, then named slots of lines rendered in the order first used,
    rewritten to ``path`` (when given) after every change. ``progress``: where rows are echoed as they come
    (stdout, stderr, or None); ``budget``: seconds for every guarded item together."""

    def __init__(
        self,
        path: str | os.PathLike | None,
        title: str = "",
        *,
        script: str | None = None,
        argv: Sequence[str] | None = None,
        budget: float = math.inf,
        progress: IO[str] | None = sys.stdout,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.title, self.budget, self.progress = title, budget, progress
        name = Path(script or sys.argv[0]).name
        self.command = f"python benchmarks/{name} {shlex.join(sys.argv[1:] if argv is None else argv)}".rstrip()
        self.clock, self.date = Stopwatch(), datetime.now(timezone.utc)
        self.load_start, self.load_end = load_average(), ""
        self.environment: list[str] = []  # the script's own header lines (device, settings)
        self.slots: dict[str, list[str]] = {}
        self.skipped = self.failed = 0
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------------------------------ content
    def header(self) -> list[str]:
        machine = platform.processor() or platform.machine()
        end = f", {self.load_end} at the end" if self.load_end else ""
        return [
            *([f"# {self.title}", ""] if self.title else []),
            f"- Date: {self.date:%Y-%m-%d %H:%M} UTC; machine: {machine}, {cores()} CPU cores of {os.cpu_count()}; "
            f"load averages (1, 5, 15 min) {self.load_start} at the start{end}",
            f"- Versions: {versions()}",
            f"- Command: `{self.command}`",
            *self.environment,
        ]

    def render(self) -> str:
        return "\n".join([*self.header(), ""] + [line for lines in self.slots.values() for line in [*lines, ""]])

    def write(self) -> None:
        if self.path is not None:
            tmp = self.path.with_suffix(self.path.suffix + ".tmp")
            tmp.write_text(self.render())
            os.replace(tmp, self.path)

    def log(self, msg: str) -> None:
        """A progress line to stderr, stamped with the seconds since the report was opened."""
        print(f"[{self.clock.seconds:6.1f} s] {msg}", file=sys.stderr, flush=True)

    def add(self, slot: str, *lines: str) -> None:
        self.slots.setdefault(slot, []).extend(lines)
        self.write()

    def set(self, slot: str, *lines: str) -> None:
        """Replace ``slot``'s lines (a table rebuilt as results come in)."""
        self.slots[slot] = []
        self.add(slot, *lines)

    def row(self, slot: str, *values: object) -> None:
        """A table row in ``slot``, echoed to ``progress``."""
        line = cells(*values)
        if self.progress is sys.stderr:
            self.log(line)
        elif self.progress is not None:
            print(line, file=self.progress, flush=True)
        self.add(slot, line)

    def fail_row(self, slot: str, message: str, *lead: object) -> None:
        """A row of ``lead`` cells, dashes, and ``message`` in the last (note) column of ``slot``'s table."""
        columns = next(line for line in self.slots[slot] if line.startswith("| ")).count("|") - 1
        self.row(slot, *lead, *["–"] * (columns - len(lead) - 1), message)

    def finish(self, echo: bool = True) -> str:
        """Record the load at the end, write the file, print the whole report (``echo``); returns it."""
        self.load_end = load_average()
        self.write()
        text = self.render()
        if echo:
            print(text, end="", flush=True)
        return text

    # ------------------------------------------------------------------------------------------- guard
    def guard(
        self,
        what: str,
        fn: Callable[[], T],
        *,
        slot: str = "failures",
        lead: Sequence[object] = (),
        need: float = 0.0,
        cap: float | None = None,
    ) -> T | None:
        """``fn()``, or None when it fails: the failure becomes one line of the report (a row of ``lead`` cells
        in ``slot``'s table when it has one, else ``- what: failed: ...``) and the run goes on. With a
        ``budget``: skipped when fewer than ``need`` s are left, stopped (``SIGALRM``, main thread only)
        after ``min(cap, budget left)`` s."""
        left = self.budget - self.clock.seconds
        if left < need:
            self.skipped += 1
            self._failure(slot, what, lead, f"skipped: time budget ({left:.0f} s left, needs ~{need:.0f} s)")
            return None
        if self.progress is sys.stderr:
            self.log(f"{what} ...")
        limit = min(cap if cap is not None else math.inf, left)
        alarm = math.isfinite(limit) and hasattr(signal, "SIGALRM")
        alarm = alarm and threading.current_thread() is threading.main_thread()
        seconds = max(1, math.ceil(limit)) if alarm else 0

        def on_alarm(signum, frame):
            raise TimeoutError(f"stopped after {seconds} s")

        previous = signal.signal(signal.SIGALRM, on_alarm) if alarm else None
        try:
            if alarm:
                signal.alarm(seconds)
            try:
                return fn()
            finally:
                if alarm:
                    signal.alarm(0)  # before the handler below: a late alarm cannot escape it
        except Exception as exc:  # every failure becomes a line; the run goes on
            traceback.print_exc(file=sys.stderr)
            self.failed += 1
            text = " ".join(str(exc).split())[:200].replace("|", "/") or "no message"
            self._failure(slot, what, lead, f"failed: {type(exc).__name__}: {text}")
            return None
        finally:
            if alarm:
                signal.signal(signal.SIGALRM, previous)

    def _failure(self, slot: str, what: str, lead: Sequence[object], message: str) -> None:
        if any(line.startswith("| ") for line in self.slots.get(slot, [])):
            self.fail_row(slot, message, *lead)
        else:
            self.add(slot, f"- {what}: {message}")


__all__ = [
    "Report",
    "Stopwatch",
    "call_times",
    "cells",
    "cores",
    "interleaved_min_ms",
    "load_average",
    "min_ms",
    "sync",
    "table",
    "versions",
]
