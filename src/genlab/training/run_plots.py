"""The run's PNG plots (loss, lr, grad norm: track/plots.py) redrawn while it trains.

Rank 0 reads the logs in the loop's thread; a background queue draws (the only thread that
uses matplotlib during a run). A refresh comes at most every PLOT_REFRESH_S (three PNGs cost
~0.5 s of CPU: a short run draws once, at its end) and is dropped while the previous one
still draws (the next shows more anyway); the final one always runs. Plots that cannot be
drawn are a warning, never a failed run.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape

from genlab.track import logs, plots
from genlab.track.rundir import RunDir
from genlab.training.checkpoint_writer import BackgroundQueue

PLOT_REFRESH_S = 30.0  # the PNG plots are redrawn during a run at most this often


class RunPlots:
    def __init__(self, run_dir: RunDir, is_main: bool, background: bool):
        self.run_dir, self.is_main = run_dir, is_main
        self.queue = BackgroundQueue(background=background)
        self._drawn_at = time.monotonic()  # the first refresh waits PLOT_REFRESH_S too

    def refresh(self, final: bool = False) -> None:
        if not self.is_main:
            return
        if not final and (self.queue.busy() or time.monotonic() - self._drawn_at < PLOT_REFRESH_S):
            return
        self._drawn_at = time.monotonic()
        records = logs.read_jsonl(self.run_dir.metrics)
        events = logs.read_jsonl(self.run_dir.events)
        self.queue.submit(plots.plot_run, records, events, self.run_dir.plots)

    def finish(self, console: Console) -> None:
        """Wait for the last plots (a failure is a warning: the run's results are on disk)."""
        try:
            self.queue.wait()
        except Exception as exc:
            console.print(f"[yellow]warning[/]: plots not refreshed ({escape(str(exc))})")
        self.queue.close()

    def close(self) -> None:
        """Stop without waiting for success (the run failed: its error is the news)."""
        self.queue.close()
