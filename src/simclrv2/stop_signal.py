"""A stop request between steps: SIGTERM (a scheduler's preemption notice) or Ctrl-C becomes a
flag that training reads after each step, so the run ends with a checkpoint instead of mid-write;
a second Ctrl-C stops at once."""

from __future__ import annotations

import signal
import threading

from simclrv2.metrics import LOG


class StopSignal:
    """Turns SIGTERM/SIGINT into a flag checked between steps (main thread only)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested and signum == signal.SIGINT:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True
        LOG.warning(
            "%s received: finishing this step, then writing a checkpoint",
            signal.Signals(signum).name,
        )

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
