"""Stopping a run cleanly on Ctrl-C (SIGINT) or SIGTERM (a scheduler, `kill`, torchrun).

A signal during training does not stop it mid-step (a half-applied optimizer step is no state
to save): it asks the loop to finish the step, save a checkpoint (atomic, as always) and end
with `RunInterrupted`, whose message is the exact command that continues the run. A second
Ctrl-C stops at once (KeyboardInterrupt), from the previous checkpoint on.

Handlers are installed only in the main thread (Python's rule for signals) and put back when
training ends, so a notebook or a caller's own handlers are untouched afterwards.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequests:
    """Records a stop signal for the loop to act on at the end of the step."""

    def __init__(self, say: Any = None) -> None:
        self.signal_name: str | None = None
        self._say = say  # e.g. console.print: tell the user the signal was heard
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        if self.requested:
            return
        self.signal_name = signal.Signals(signum).name
        if self._say is not None:
            self._say(
                f"genlab: {self.signal_name} received; finishing this step and saving a "
                "checkpoint (Ctrl-C again stops at once)"
            )
