"""Goodput: where a run's wall time went, and the share that trained the model.

A run's wall time is the time its processes were up, summed over every attempt (the first
`genlab train`, each `genlab resume`, each elastic restart), plus, for an elastic restart, the
time from the checkpoint it resumes from until the new process started. It is split into
buckets, each measured once, on the training thread:

  productive       steps whose updates are in the weights (a rollback moves the steps it
                   discards to `rollback`)
  eval             evaluations and samples
  checkpoint_save  what saving costs the loop: the copy to host memory, waiting for a save
                   still being written (and, at the end, for the last one)
  checkpoint_load  loading a checkpoint (resume, early stopping's best weights)
  data             preparing or loading the dataset
  startup          process start to the first step, less data and loading (imports, the
                   process group, building the model); with train.compile, each attempt's
                   first step (the compile)
  skipped          steps the guard or fp16's loss scaler did not apply
  rollback         steps a rollback discarded (recomputed work) and the restore itself
  restart          work lost when a run stopped (steps after the checkpoint it resumed from)
                   and, for an elastic restart, the time until the new process started
  other            the rest: logs, progress, plots, the guard's checks

`goodput = productive / wall`. The loop keeps `productive` itself (it rolls back with the
weights); this clock keeps the others and survives restarts through the checkpoint state.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOST = (
    "eval",
    "checkpoint_save",
    "checkpoint_load",
    "data",
    "startup",
    "skipped",
    "rollback",
    "restart",
)

_marked_start: float | None = None
_phases: dict[str, float] = {}


def mark_process_start() -> None:
    """The `genlab` command calls this first: the attempt began when the process did, so
    interpreter start-up and imports count as start-up."""
    global _marked_start
    _marked_start = process_start_time()


def attempt_start() -> float:
    """When this attempt began (wall clock): the process start the command marked, else now
    (a call from Python: the run starts with the call). Taken once per run."""
    global _marked_start
    started, _marked_start = _marked_start, None
    return started if started is not None else time.time()


def process_start_time() -> float:
    """This process's start (wall clock) from /proc on Linux; elsewhere, now."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            # Field 22 (after the parenthesised command name) is the start in clock ticks
            # after boot.
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat", encoding="ascii") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Time spent in a named phase before a run's clock exists (data preparation inside a
    family's build); the run takes it with `take_phase`."""
    t = time.perf_counter()
    try:
        yield
    finally:
        _phases[name] = _phases.get(name, 0.0) + time.perf_counter() - t


def take_phase(name: str) -> float:
    return _phases.pop(name, 0.0)


def logged_after(metrics: Path, step: int, elapsed: float) -> float:
    """Seconds of work an interrupted attempt logged in `metrics` (metrics.jsonl) after the
    checkpoint of `step`, taken at `elapsed`: lost, and done again by the resume."""
    from genlab.track.logs import read_jsonl

    times = [
        r["time"]
        for r in read_jsonl(metrics)
        if isinstance(r.get("step"), int)
        and r["step"] > step
        and isinstance(r.get("time"), (int, float))
    ]
    return max(0.0, max(times) - elapsed) if times else 0.0


class GoodputClock:
    """The buckets of one run, across its attempts (see the module doc)."""

    def __init__(self, started: float):
        self.started = started  # this attempt's start, wall clock
        self.before = 0.0  # wall seconds of earlier attempts and restart gaps
        self.seconds = dict.fromkeys(LOST, 0.0)
        self.restarts = 0  # elastic restarts
        self._this_attempt = 0.0  # seconds measured in this attempt (for start-up)
        _phases.clear()  # phases timed before this run belong to no run

    def elapsed(self) -> float:
        return self.before + time.time() - self.started

    @contextlib.contextmanager
    def measure(self, bucket: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(bucket, time.perf_counter() - t)

    def add(self, bucket: str, seconds: float) -> None:
        self.seconds[bucket] += seconds
        self._this_attempt += seconds

    def steps_begin(self) -> None:
        """The first step is next: this attempt's start-up is what the buckets do not hold."""
        self.seconds["startup"] += max(0.0, time.time() - self.started - self._this_attempt)

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": dict(self.seconds), "restarts": self.restarts, "saved_at": time.time()}

    def resume(self, elapsed: float, state: dict[str, Any], lost: float, elastic: bool) -> float:
        """Continue from a checkpoint taken at `elapsed` wall seconds with clock `state`.
        `lost`: seconds of work the interrupted attempt logged after that checkpoint. An
        elastic restart counts everything from the checkpoint to this process's start
        instead (the lost work, the shutdown, the restart). Returns the seconds lost."""
        if elastic:
            lost = max(lost, self.started - state.get("saved_at", self.started))
            self.restarts = int(state.get("restarts", 0)) + 1
        else:
            self.restarts = int(state.get("restarts", 0))
        saved = state.get("seconds", {})
        self.seconds = {k: self.seconds[k] + float(saved.get(k, 0.0)) for k in LOST}
        self.seconds["restart"] += lost
        self.before = elapsed + lost
        return lost

    def start_over(self, lost: float) -> None:
        """An elastic restart before the first checkpoint: the run starts again from step 0,
        and the `lost` seconds the failed attempt logged are the restart's."""
        self.restarts += 1
        self.seconds["restart"] += lost
        self.before += lost

    def report(self, productive: float) -> dict[str, Any]:
        """The `goodput` block of metrics.json: seconds per bucket, the remainder, the share."""
        wall = self.elapsed()
        spent = {f"{k}_s": round(v, 3) for k, v in self.seconds.items()}
        other = wall - productive - sum(self.seconds.values())
        return {
            "wall_s": round(wall, 3),
            "productive_s": round(productive, 3),
            **spent,
            "other_s": round(other, 3),
            "restarts": self.restarts,
            "goodput": round(productive / wall, 4) if wall > 0 else 0.0,
        }
