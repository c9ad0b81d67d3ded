"""A worker's trial loop: claim a trial from the shared queue, run it, tell the result.

This replaces `study.optimize`, whose loop creates a new trial whenever the queue is empty
(each of k workers would then run its own n_trials). Here a worker only claims
(genlab.tuning.queue), so the study runs exactly its budget whoever takes part:

- before each claim, `optuna.storages.fail_stale_trials` fails the trials of dead workers
  (database storages: their heartbeat stopped) and re-queues them (storage.Requeue);
- the sampler is rebuilt for each trial with a seed hashed from `tune.seed` and the trial
  number (genlab.tuning.samplers.trial_seed): the number comes from the storage, so workers
  never draw the same sequence, a resumed study never repeats its points, and a one-worker
  study is reproducible;
- while a trial runs, a thread records its heartbeat (database storages);
- the loop ends when the queue is empty; with a heartbeat, a worker also waits for trials still
  running elsewhere, since a dead machine's trial comes back to the queue when it goes stale.

Worker processes started by `--workers N` die with their parent (`die_with_parent`): a parent
killed while its workers run would otherwise leave orphans that the next `genlab tune` in the
same study dir fails and re-runs under their feet.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from genlab.errors import require
from genlab.tuning.objective import TrialFailed
from genlab.tuning.queue import claim, fill_one_more, unfinished


def run_trials(
    study: Any,
    storage: Any,
    objective: Callable[[Any], float],
    sampler_for: Callable[[int], Any],
    *,
    accept: Callable[[str], bool],
    open_ended: bool,
    timeout: float | None,
    callbacks: list[Callable[[Any, Any], bool | None]],
) -> None:
    """Claim and run trials until the queue is empty, `timeout` seconds have passed, or a
    callback returned True after a trial. `accept`: the slots this study's budget covers
    (genlab.tuning.queue). `open_ended`: no trial budget (tune.timeout only), so an empty queue
    gets one more placeholder."""
    optuna = require("optuna", "tune")
    start = time.monotonic()
    beat = _heartbeat_interval(storage)
    while True:
        if timeout is not None and time.monotonic() - start >= timeout:
            return
        if beat is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
        trial_id = claim(study, storage, accept)
        if trial_id is None:
            if open_ended:
                fill_one_more(study)
                continue
            if beat is not None and unfinished(study.get_trials(deepcopy=False)):
                # A trial elsewhere may still go stale and come back to the queue.
                time.sleep(max(1.0, beat / 4))
                continue
            return
        number = storage.get_trial(trial_id).number
        study.sampler = sampler_for(number)
        trial = optuna.trial.Trial(study, trial_id)
        with _beating(storage, trial_id, beat):
            _run_one(study, trial, objective)
        frozen = storage.get_trial(trial_id)
        if any([callback(study, frozen) for callback in callbacks]):
            return


def _run_one(study: Any, trial: Any, objective: Callable[[Any], float]) -> None:
    optuna = require("optuna", "tune")
    S = optuna.trial.TrialState
    try:
        value = objective(trial)
    except optuna.TrialPruned:
        study.tell(trial, state=S.PRUNED, skip_if_finished=True)
        return
    except TrialFailed:
        study.tell(trial, state=S.FAIL, skip_if_finished=True)
        return
    except BaseException:
        # Ctrl-C, a user error no trial can escape, a bug: record the trial, then stop.
        study.tell(trial, state=S.FAIL, skip_if_finished=True)
        raise
    study.tell(trial, value, skip_if_finished=True)


def _heartbeat_interval(storage: Any) -> int | None:
    get = getattr(storage, "get_heartbeat_interval", None)
    return get() if get is not None else None


@contextlib.contextmanager
def _beating(storage: Any, trial_id: int, interval: int | None) -> Iterator[None]:
    """Record the trial's heartbeat now and every `interval` seconds until the block ends."""
    if interval is None:
        yield
        return
    done = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # a missed beat is retried at the next one
                storage.record_heartbeat(trial_id)
            if done.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def die_with_parent(parent_pid: int) -> None:
    """End this worker process when `parent_pid` (the `genlab tune` that started it) ends.

    Linux: the kernel sends SIGKILL when the parent dies (PR_SET_PDEATHSIG). Elsewhere, and as
    a second line, a daemon thread checks every second that the parent is still ours."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before we could ask
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
