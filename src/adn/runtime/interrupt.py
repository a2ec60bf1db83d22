"""SIGTERM/SIGINT during training: finish the step, save a checkpoint at that step boundary, exit 128 + signal."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path

from .distributed import is_main_process


class StopRequest:
    """SIGTERM/SIGINT handling during training: the signal only sets a flag; the current step finishes, a
    checkpoint is saved at that step boundary and ``exit`` returns 128 + the signal number (143 / 130). A second
    SIGINT aborts at once (KeyboardInterrupt), keeping the last saved checkpoint."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        if is_main_process():
            print(
                f"adn: {signal.Signals(signum).name} received: stopping after this step "
                "(saving a checkpoint; Ctrl-C again to abort now)",
                file=sys.stderr,
                flush=True,
            )

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():  # signal handlers need the main thread
            yield
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def exit(self, where: str, path: Path) -> int:
        assert self.signum is not None
        if is_main_process():
            print(
                f"adn: {signal.Signals(self.signum).name}: stopped {where}; checkpoint saved to {path}; "
                f"continue with --resume {path}",
                file=sys.stderr,
                flush=True,
            )
        return 128 + self.signum


def ignore_stop_signals(worker_id: int) -> None:
    """Ctrl-C reaches the whole process group: DataLoader workers leave it to the main process, which stops at
    a step boundary. (SIGTERM stays fatal for workers: the DataLoader and multiprocessing stop them with it.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


__all__ = ["StopRequest", "ignore_stop_signals"]
