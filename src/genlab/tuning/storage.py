"""Where a study lives, and recovering trials whose process died.

- one process: an SQLite file `study.db` in the study dir;
- `--workers N > 1` on one machine: Optuna's JournalStorage on `journal.log` (append-only file
  with a file lock; SQLite's locking is not built for concurrent writers);
- `tune.storage: <URL>`: any database Optuna's RDBStorage accepts (several machines).

A study dir keeps the storage it was created with: re-running with another --workers resumes
from the existing file rather than starting a second study.

Killed workers: RDB storages run Optuna's heartbeat, so a trial whose heartbeat stops is failed
and re-queued by RetryHeartbeatStaleTrialCallback (Optuna 5's name for RetryFailedTrialCallback).
The journal has no heartbeat, so for study-dir storages `genlab tune` holds an exclusive lock on
the study dir while it runs: whoever gets the lock knows every RUNNING trial is an orphan, fails
it and re-queues it the same way (also a trial interrupted with Ctrl-C).
"""

from __future__ import annotations

import fcntl
import os
import warnings
from pathlib import Path
from typing import Any

from genlab.errors import RunDirError, require

HEARTBEAT_S = 20
GRACE_S = 60
INTERRUPTED = "interrupted"  # user attr set on a trial stopped by Ctrl-C


class StudyLock:
    """An exclusive flock on `<study_dir>/.lock` for the lifetime of a `genlab tune` call."""

    def __init__(self, study_dir: Path):
        self.path = study_dir / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> StudyLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirError(
                f"study dir {str(self.path.parent)!r} is in use by another `genlab tune`; wait "
                "for it to finish, or pass another --study-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def storage_spec(url: str | None, study_dir: Path, workers: int) -> dict[str, str]:
    """Decide once, in the parent, which storage a study uses; workers reopen it from this."""
    if url:
        return {"kind": "rdb", "url": url, "local": "no"}
    journal, db = study_dir / "journal.log", study_dir / "study.db"
    if journal.exists() or (workers > 1 and not db.exists()):
        return {"kind": "journal", "path": str(journal.resolve()), "local": "yes"}
    return {"kind": "rdb", "url": f"sqlite:///{db.resolve()}", "local": "yes"}


def open_storage(spec: dict[str, str], max_retry: int) -> Any:
    optuna = require("optuna", "tune")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    if spec["kind"] == "journal":
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

        path = spec["path"]
        # The open(O_EXCL) lock also works on file systems without symlinks.
        return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            spec["url"],
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=retry,
        )


def recover_orphans(study: Any, max_retry: int) -> list[int]:
    """Fail RUNNING trials (their process is gone: we hold the study lock) and re-queue them and
    interrupted ones, up to `max_retry` times each. Returns the numbers re-queued."""
    optuna = require("optuna", "tune")
    TrialState = optuna.trial.TrialState
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    requeue = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
        requeue.append(t.number)
    retried = retried_numbers(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.user_attrs.get(INTERRUPTED) and t.number not in retried:
            requeue.append(t.number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for number in sorted(set(requeue)):
            retry(study, study.get_trials(deepcopy=True)[number])
    return sorted(set(requeue))


def retried_numbers(study: Any) -> dict[int, int]:
    """Trial number -> the number of the trial that re-ran it."""
    out: dict[int, int] = {}
    for t in study.get_trials(deepcopy=False):
        for number in t.system_attrs.get("retry_history", []):
            out[number] = t.number
    return out
