"""Where the per-shard work of a streaming build runs (`data.engine`).

An engine maps a task function (genlab.data.stages) over tasks and yields the results in
task order, with a bounded number of tasks in flight, so the driver's memory does not grow
with the corpus. Two engines:

- `local` (default): this machine, `data.workers` processes (null: every core this process
  may use). One task, or one worker, runs in this process: no pool to start.
- `dask`: a Dask distributed cluster: `data.engine_address` names a running scheduler
  (`tcp://host:8786`; its workers need genlab installed and the source files, the cache
  directory and $GENLAB_CACHE_DIR on a shared filesystem), or, when it is null, a local
  cluster of `data.workers` processes (what the tests run).
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from genlab.config import DataConfig
from genlab.errors import ConfigError, require

ENGINES = ("local", "dask")


class Engine(Protocol):
    workers: int

    def imap(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]: ...

    def start(self) -> None: ...


def default_workers() -> int:
    """Every core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def open_engine(cfg: DataConfig) -> Iterator[Engine]:
    """The engine `cfg.engine` names, closed (workers stopped) on exit."""
    workers = cfg.workers or default_workers()
    if cfg.engine == "local":
        engine = LocalEngine(workers)
    elif cfg.engine == "dask":
        engine = DaskEngine(workers, cfg.engine_address)
    else:  # pragma: no cover - the schema allows only ENGINES
        raise ConfigError(f"data.engine {cfg.engine!r} is not known; use one of {ENGINES}")
    try:
        yield engine
    finally:
        engine.close()


def _ordered(submit: Callable[[Any], Any], result: Callable[[Any], Any], tasks: Iterable[Any],
             window: int) -> Iterator[Any]:  # fmt: skip
    """Results in task order with at most `window` tasks submitted and not yet consumed."""
    pending: deque[Any] = deque()
    for task in tasks:
        pending.append(submit(task))
        if len(pending) >= window:
            yield result(pending.popleft())
    while pending:
        yield result(pending.popleft())


class LocalEngine:
    """A process pool on this machine (started on the first call with several tasks)."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool: Any = None

    def imap(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        tasks = list(tasks)
        if self.workers <= 1 or len(tasks) <= 1:
            yield from map(fn, tasks)
            return
        self.start()
        yield from _ordered(
            lambda t: self.pool.submit(fn, t), lambda f: f.result(), tasks, 2 * self.workers
        )

    def start(self) -> None:
        """Start the worker processes now (the first `imap` with several tasks does it
        otherwise): each spends ~1 s starting Python and importing genlab's stages, which
        the driver can overlap with its own planning."""
        if self.pool is not None or self.workers <= 1:
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from genlab.data.stages import quiet_worker

        # spawn, not fork: the parent may hold threads (tokenizers, torch) that a fork
        # would copy mid-flight.
        self.pool = ProcessPoolExecutor(
            self.workers, multiprocessing.get_context("spawn"), initializer=quiet_worker
        )
        self.pool.submit(os.getpid)  # a spawn pool launches all its workers on the first task

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None


class DaskEngine:
    """Tasks on a Dask distributed cluster (a scheduler address, or a local cluster)."""

    def __init__(self, workers: int, address: str | None):
        distributed = require("distributed", "scale")
        self.workers = workers
        self.cluster = None
        if address:
            self.client = distributed.Client(address, timeout="30s")
            self.workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        else:
            self.cluster = distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                worker_dashboard_address=None,
            )
            self.client = distributed.Client(self.cluster)

    def imap(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        # pure=False: two equal tasks are two runs (they write files).
        yield from _ordered(
            lambda t: self.client.submit(fn, t, pure=False),
            lambda f: f.result(),
            tasks,
            2 * self.workers,
        )

    def start(self) -> None:
        """The cluster's workers are running already."""

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
