"""Where genlab's messages go: consoles that suit their destination, and output failures that
never stop a run.

- On a terminal rich wraps and redraws as usual. Written to a file or a pipe (CI logs,
  `2>&1 | tee log`), a console is WIDE columns wide and never wraps a line, so metric names,
  table cells and units come out whole instead of cut at 80 columns.
- A console write that fails (the reader of a pipe went away: `genlab train ... | head -3`;
  a closed terminal) must not end training: `protect_streams` wraps stdout and stderr so the
  first failure points the descriptor at /dev/null and every later write, the interpreter's
  last flush included, succeeds silently. The run goes on and checkpoints as usual.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from rich.console import Console

WIDE = 250  # columns of a console that is not a terminal (long enough for any metric name)


def make_console(stderr: bool = False, **kwargs: Any) -> Console:
    """A rich Console on stdout (or stderr); not on a terminal, wide and without wrapping."""
    console = Console(stderr=stderr, **kwargs)
    if not console.is_terminal:
        console.width = WIDE
        console.soft_wrap = True
    return console


def rate_text(key: str, value: float) -> str:
    """A throughput with its unit: `throughput/tokens_per_s` 1424.2 -> '1,424 tokens/s';
    `throughput/mfu` 0.0312 -> 'MFU 3.1%' (a fraction of the measured matmul peak, no rate)."""
    name = key.rsplit("/", 1)[-1]
    if not name.endswith("_per_s"):
        return f"{name.upper()} {value:.1%}"
    return f"{value:,.0f} {name.removesuffix('_per_s')}/s"


class _SafeStream:
    """A text stream whose write and flush failures are swallowed (see the module doc)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.closed_by_reader = False

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):
            self._silence()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            self._silence()

    def _silence(self) -> None:
        """Point the descriptor at /dev/null: what is still buffered, and everything written
        later, goes nowhere without another error."""
        self.closed_by_reader = True
        try:
            fd = self._stream.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, buffer, ...
        return getattr(self._stream, name)


def protect_streams() -> None:
    """Wrap sys.stdout and sys.stderr (once) so console failures never raise."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _SafeStream):
            setattr(sys, name, _SafeStream(stream))
