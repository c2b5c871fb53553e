"""Preemption signals: SIGTERM / SIGUSR2 (SLURM, submitit) ask the training loop to stop at the next step boundary."""
from __future__ import annotations

import signal
from typing import Any


class StopRequest:
    """SIGTERM / SIGUSR2 only set a flag; the loop saves at the next step boundary, then chains the old handler."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGUSR2):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread: no signal handling
                pass

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def uninstall(self) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)
        self._previous.clear()

    def chain(self) -> None:
        """Call the handler that was installed before ours (submitit's USR2 handler requeues the job and exits)."""
        prev = self._previous.get(self.signum) if self.signum is not None else None
        self.uninstall()
        if callable(prev):
            prev(self.signum, None)
