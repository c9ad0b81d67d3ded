"""Where the training loop's records go: one interface (`MetricsSink`), several sinks.

The loop hands every metrics record (one metrics.jsonl line), every guard event and each
evaluation's sample files to the one `SinkList` that `open_sinks` builds from the config's
`track:` section; it never talks to a tracking tool itself.

- `JsonlSink` is always on and synchronous: metrics.jsonl / events.jsonl, flushed per line
  (the run's own record, which nothing may lose).
- The tracking tools chosen in `track:` (SINKS: TensorBoard, MLflow) run on one background
  thread behind a bounded queue (`BackgroundSinks`), so a slow or failing tool never slows or
  stops training: a sink that raises is switched off for the rest of the run with one warning,
  and when the queue is full its records are dropped and counted (one warning). metrics.jsonl
  still holds everything.

Only rank 0 writes: the other ranks get an empty SinkList (training/distributed.py).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from genlab.errors import GuardAbort, first_line, require
from genlab.registry import Registry
from genlab.track.logs import JsonlWriter
from genlab.track.rundir import RunDir, RunLock

if TYPE_CHECKING:
    from rich.console import Console

    from genlab.config import ExperimentConfig, TrackConfig

# track: key -> the sink class; each is built as SinkClass(cfg, run, start_step) on the
# background thread (their heavy imports happen there too).
SINKS = Registry(
    "tracking sink",
    {
        "tensorboard": "genlab.track.tensorboard_sink:TensorBoardSink",
        "mlflow": "genlab.track.mlflow_sink:MlflowSink",
    },
)
# sink -> (the module it needs, the genlab extra that installs it)
NEEDS = {"tensorboard": ("tensorboard", "track"), "mlflow": ("mlflow", "track")}

Status = Literal["finished", "aborted", "interrupted", "failed"]


@dataclass(frozen=True)
class RunEnd:
    """How a run (or this process's part of it) ended, and its final metrics."""

    status: Status
    final: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    @classmethod
    def after(cls, exc: BaseException) -> RunEnd:
        if isinstance(exc, GuardAbort):
            return cls("aborted", reason=first_line(exc))
        if isinstance(exc, KeyboardInterrupt):
            return cls("interrupted", reason="interrupted")
        return cls("failed", reason=first_line(exc))


class MetricsSink(Protocol):
    """What every sink takes. Records are metrics.jsonl lines: {"step": int, "time": float,
    "<section>/<name>": number, ...}; events are events.jsonl lines."""

    def write(self, record: Mapping[str, Any]) -> None: ...

    def write_event(self, event: Mapping[str, Any]) -> None: ...

    def add_samples(self, step: int, files: Sequence[Path]) -> None: ...

    def flush(self) -> None: ...

    def close(self, end: RunEnd) -> None: ...


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a record a tracking tool logs: every key but `step`, bools and
    non-numbers left out (NaN and inf kept: hiding them hides a fault)."""
    return {
        k: float(v)
        for k, v in record.items()
        if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
    }


class JsonlSink:
    """metrics.jsonl and events.jsonl (track/logs.py), written as the loop goes."""

    def __init__(self, run: RunDir):
        self._metrics = JsonlWriter(run.metrics)
        self._events = JsonlWriter(run.events)

    def write(self, record: Mapping[str, Any]) -> None:
        self._metrics.write(dict(record))

    def write_event(self, event: Mapping[str, Any]) -> None:
        self._events.write(dict(event))

    def add_samples(self, step: int, files: Sequence[Path]) -> None:
        pass  # the files are in samples/ already

    def flush(self) -> None:
        pass  # every line is flushed as written

    def close(self, end: RunEnd) -> None:
        self._metrics.close()
        self._events.close()


class BackgroundSinks:
    """Sinks run on one daemon thread: the caller only puts work on a bounded queue.

    `openers` build the sinks on that thread; the constructor waits for them up to
    `open_timeout` seconds, so a tool's import and connection do not compete with the first
    training steps (which would also skew their throughput), while a server that does not
    answer cannot hold training back. Any exception from a sink switches it off with one
    `warn`; a full queue drops work (counted, one `warn`). `close` waits up to
    `close_timeout` seconds."""

    IDLE_FLUSH_S = 2.0  # with no new work for this long, sinks flush what they buffered

    def __init__(
        self,
        openers: Mapping[str, Callable[[], MetricsSink]],
        warn: Callable[[str], None],
        max_queue: int = 20_000,
        open_timeout: float = 60.0,
        close_timeout: float = 120.0,
    ):
        self._openers = dict(openers)
        self._warn = warn
        self._queue: queue.Queue[tuple[str, tuple[Any, ...]]] = queue.Queue(max_queue)
        self._close_timeout = close_timeout
        self._dropped = 0
        self._failed: dict[str, str] = {}
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._work, name="genlab-track", daemon=True)
        self._thread.start()
        if not self._opened.wait(open_timeout):
            self._warn(
                f"tracking ({', '.join(self._openers)}) is not ready after {open_timeout:.0f}s; "
                "training goes on and records are sent when it is"
            )

    @property
    def failed(self) -> dict[str, str]:
        """Sinks switched off, with the reason."""
        return dict(self._failed)

    def write(self, record: Mapping[str, Any]) -> None:
        self._put("write", dict(record))

    def write_event(self, event: Mapping[str, Any]) -> None:
        self._put("write_event", dict(event))

    def add_samples(self, step: int, files: Sequence[Path]) -> None:
        self._put("add_samples", step, list(files))

    def flush(self) -> None:
        self._put("flush")

    def submit(self, method: str, *args: Any) -> None:
        """Call `method(*args)` on every sink, on the thread (sinks beyond MetricsSink)."""
        self._put(method, *args)

    def close(self, end: RunEnd) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put(("close", (end,)), timeout=self._close_timeout)
        self._thread.join(self._close_timeout)
        if self._thread.is_alive():
            self._warn(
                f"tracking ({', '.join(self._openers)}) did not finish within "
                f"{self._close_timeout:.0f}s; what it had not sent is in metrics.jsonl"
            )
        if self._dropped:
            self._warn(
                f"tracking fell behind and dropped {self._dropped} records; metrics.jsonl "
                "has every one"
            )

    def _put(self, method: str, *args: Any) -> None:
        try:
            self._queue.put_nowait((method, args))
        except queue.Full:
            self._dropped += 1

    def _work(self) -> None:
        sinks: dict[str, MetricsSink] = {}
        for name, opener in self._openers.items():
            try:
                sinks[name] = opener()
            except Exception as exc:
                self._switch_off(name, exc)
        self._opened.set()
        while True:
            try:
                method, args = self._queue.get(timeout=self.IDLE_FLUSH_S)
            except queue.Empty:
                method, args = "flush", ()
            for name, sink in list(sinks.items()):
                try:
                    getattr(sink, method)(*args)
                except Exception as exc:
                    del sinks[name]
                    self._switch_off(name, exc)
            if method == "close":
                return

    def _switch_off(self, name: str, exc: BaseException) -> None:
        self._failed[name] = first_line(exc)
        self._warn(
            f"tracking to {name} failed ({first_line(exc)[:200]}); it is off for the rest of "
            "this run (metrics.jsonl has every record)"
        )


class SinkList:
    """The loop's one sink: fans each call out to its sinks, in order. Holds the run's lock
    (RUN_DIR/.running) from open to close. `SinkList([])` writes nothing (ranks > 0)."""

    def __init__(self, sinks: Sequence[MetricsSink], lock: RunLock | None = None):
        self.sinks = list(sinks)
        self._lock = lock
        self._closed = False

    def write(self, record: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(record)

    def write_event(self, event: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.write_event(event)

    def add_samples(self, step: int, files: Sequence[Path]) -> None:
        if files:
            for sink in self.sinks:
                sink.add_samples(step, files)

    def flush(self) -> None:
        for sink in self.sinks:
            sink.flush()

    def close(self, end: RunEnd) -> None:
        """Close every sink (once; later calls do nothing) and release the run's lock."""
        if self._closed:
            return
        self._closed = True
        try:
            for sink in self.sinks:
                sink.close(end)
        finally:
            if self._lock is not None:
                self._lock.release()


def enabled_sinks(track: TrackConfig) -> list[str]:
    """The SINKS names a `track:` section turns on."""
    wanted = {"tensorboard": track.tensorboard, "mlflow": track.mlflow is not None}
    return [name for name in SINKS if wanted[name]]


def check_sinks(track: TrackConfig) -> None:
    """A MissingDependencyError (exit 2, the install hint) for a sink whose tool is not
    installed, without importing it."""
    for name in enabled_sinks(track):
        module, extra = NEEDS[name]
        require(module, extra, load=False)


def open_sinks(
    cfg: ExperimentConfig, run: RunDir, start_step: int, console: Console | None = None
) -> SinkList:
    """The sinks of a run: metrics.jsonl/events.jsonl, plus the `track:` section's tools on a
    background thread. `start_step` > 0 when resuming (sinks continue, never duplicate)."""
    check_sinks(cfg.track)
    lock = RunLock(run)
    lock.acquire()  # when another process holds it, this one trains unmarked
    sinks: list[MetricsSink] = [JsonlSink(run)]
    names = enabled_sinks(cfg.track)
    if names:

        def warn(message: str) -> None:
            if console is not None:
                console.print(f"[yellow]track[/]: {message}")

        def opener(name: str) -> Callable[[], MetricsSink]:
            return lambda: SINKS[name](cfg, run, start_step)

        sinks.append(BackgroundSinks({n: opener(n) for n in names}, warn))
    return SinkList(sinks, lock)


__all__ = [
    "SINKS",
    "BackgroundSinks",
    "JsonlSink",
    "MetricsSink",
    "RunEnd",
    "SinkList",
    "check_sinks",
    "enabled_sinks",
    "open_sinks",
    "scalars",
]
