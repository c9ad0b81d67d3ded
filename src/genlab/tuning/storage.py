"""Where a study lives, and recovering trials whose process died.

- one process: an SQLite file `study.db` in the study dir;
- `--workers N > 1` on one machine: Optuna's JournalStorage on `journal.log` (append-only file
  with a file lock; SQLite's locking is not built for concurrent writers);
- `tune.storage: <URL>`: PostgreSQL, MySQL or SQLite through Optuna's RDBStorage, shared by
  `genlab tune` processes on several machines (each with its own --study-dir).

A study dir keeps the storage it was created with: re-running with another --workers resumes
from the existing file rather than starting a second study.

A URL without a driver (`postgresql://...`) gets the first installed one (SQLAlchemy's own
default for PostgreSQL is psycopg 3, while the `tune` extra installs psycopg2); a bad URL, an
unknown backend, a missing driver and an unreachable server are one-line errors before any
trial runs.

Dead workers: database storages run a heartbeat (`tune.heartbeat` seconds); a trial silent for
three beats is failed by the next worker that looks, and re-queued by `requeue`. The journal has
no heartbeat, so for study-dir storages `genlab tune` holds an exclusive lock on the study dir
while it runs: whoever gets the lock knows every RUNNING trial is an orphan (its worker
processes die with their parent, see genlab.tuning.worker), fails it and re-queues it the same
way (also a trial interrupted with Ctrl-C).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib.util
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genlab.errors import ConfigError, MissingDependencyError, RunDirError, first_line, require

GRACE_BEATS = 3  # a trial whose heartbeat is older than this many intervals is dead
INTERRUPTED = "interrupted"  # user attr set on a trial stopped by Ctrl-C
# The user attrs a re-queued trial keeps: what it is (its budget slot, a grid point), not what
# the dead attempt measured.
KEEP_ON_RETRY = ("slot", "grid_point")

# backend -> (SQLAlchemy driver name, module it imports), in order of preference
DRIVERS: dict[str, tuple[tuple[str, str], ...]] = {
    "postgresql": (("psycopg2", "psycopg2"), ("psycopg", "psycopg"), ("pg8000", "pg8000")),
    "mysql": (("pymysql", "pymysql"), ("mysqldb", "MySQLdb"), ("mysqlconnector", "mysql")),
    "sqlite": (("pysqlite", "sqlite3"),),
}
INSTALL = {"postgresql": "pip install 'genlab[tune]'", "mysql": "pip install pymysql"}


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


class WorkerLock:
    """`<study_dir>/.workers.lock`: each worker process of a `genlab tune --workers N` holds it
    shared (and appends its pid); a later `genlab tune` in the same study dir takes it exclusive
    before touching the study, so it never fails the trials of workers that still run. Workers
    die with their parent (genlab.tuning.worker.die_with_parent), so the wait is short."""

    WAIT_S = 15.0

    def __init__(self, study_dir: Path):
        self.path = study_dir / ".workers.lock"

    def wait_for_old_workers(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            end = time.monotonic() + self.WAIT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > end:
                        pids = " ".join(self.path.read_text().split()) or "unknown"
                        raise RunDirError(
                            f"worker processes of an earlier `genlab tune` still run in study "
                            f"dir {_short(str(self.path.parent))!r} (pids {_short(pids, 60)}); "
                            "wait for them to finish or stop them, then run again"
                        ) from None
                    time.sleep(0.2)
            os.ftruncate(fd, 0)  # the pids of workers that are gone
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            os.close(fd)


def check_study_dir(path: Path) -> None:
    """Say in one line why `path` cannot be a study dir, writing nothing: a file, or under a
    file or a directory this user cannot write (checked before the data, which takes time)."""
    if path.exists() and not path.is_dir():
        raise RunDirError(
            f"--study-dir {_short(str(path))!r} is a file, not a directory; pass a directory "
            "(it is created when missing)"
        )
    existing = next((p for p in (path, *path.absolute().parents) if p.exists()), None)
    problem = None
    if existing is not None and not existing.is_dir():
        problem = os.strerror(errno.ENOTDIR)
    elif existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        problem = os.strerror(errno.EACCES)
    if problem:
        raise RunDirError(
            f"cannot use study dir {_short(str(path))!r}: {problem}; "
            "pass a writable directory with --study-dir"
        )


def prepare_study_dir(path: Path) -> None:
    """Create the study dir, or say in one line why it cannot be one."""
    check_study_dir(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(
            f"cannot use study dir {_short(str(path))!r}: {exc.strerror or first_line(exc)}; "
            "pass a writable directory with --study-dir"
        ) from None


def resolve_url(url: str) -> str:
    """`url` with an installed driver named; ConfigError / MissingDependencyError otherwise."""
    sa = require("sqlalchemy", "tune")
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError(
            f"tune.storage {_short(url)!r} is not a database URL; write e.g. "
            "postgresql://USER:PASSWORD@HOST:5432/DB, mysql://... or sqlite:///study.db, or "
            "leave it unset (a file in the study dir)"
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    shown = _short(parsed.render_as_string(hide_password=True))
    if backend not in DRIVERS:
        raise ConfigError(
            f"tune.storage {shown!r} uses {backend!r}; genlab runs studies on postgresql, "
            "mysql or sqlite URLs"
        )
    known = dict(DRIVERS[backend])
    if driver:
        if driver not in known:
            raise ConfigError(
                f"tune.storage {shown!r} names driver {driver!r}; use one of "
                f"{', '.join(known)} (e.g. {backend}+{next(iter(known))}://...) or none"
            )
        if importlib.util.find_spec(known[driver]) is None:
            raise MissingDependencyError(
                f"tune.storage {shown!r} needs the {driver} driver, which is not installed; "
                f"install it (pip install {driver}) or drop '+{driver}' from the URL"
            )
        return url
    for name, module in DRIVERS[backend]:
        if importlib.util.find_spec(module) is not None:
            named = parsed.set(drivername=f"{backend}+{name}")
            return named.render_as_string(hide_password=False)
    raise MissingDependencyError(
        f"tune.storage {shown!r} needs a {backend} driver and none is installed; install one "
        f"with: {INSTALL.get(backend, 'pip install ' + backend)}"
    )


def storage_spec(url: str | None, study_dir: Path, workers: int) -> dict[str, str]:
    """Decide once, in the parent, which storage a study uses; workers reopen it from this."""
    if url:
        return {"kind": "rdb", "url": resolve_url(url), "local": "no"}
    journal, db = study_dir / "journal.log", study_dir / "study.db"
    if journal.exists() or (workers > 1 and not db.exists()):
        return {"kind": "journal", "path": str(journal.resolve()), "local": "yes"}
    return {"kind": "rdb", "url": f"sqlite:///{db.resolve()}", "local": "yes"}


def open_storage(spec: dict[str, str], max_retry: int, heartbeat: int | None = None) -> Any:
    """The Optuna storage of `spec`; a database that cannot be opened is a RunDirError.
    `heartbeat` None: a reader (a report), which runs no trial and re-queues none."""
    optuna = require("optuna", "tune")
    if spec["kind"] == "journal":
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

        path = spec["path"]
        # The open(O_EXCL) lock also works on file systems without symlinks.
        return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    sa = require("sqlalchemy", "tune")
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                if heartbeat is None:
                    return optuna.storages.RDBStorage(spec["url"])
                return optuna.storages.RDBStorage(
                    spec["url"],
                    heartbeat_interval=heartbeat,
                    grace_period=GRACE_BEATS * heartbeat,
                    heartbeat_stale_trial_callback=Requeue(max_retry),
                )
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
            # Workers started at once on a new database race to create Optuna's tables; the
            # loser sees a duplicate and finds them made when it tries again.
            if attempt == 4:
                raise
            time.sleep(0.5 + attempt)
        except sa.exc.DBAPIError as exc:
            raise storage_error(spec, exc) from None
    raise AssertionError("unreachable")


def storage_error(spec: dict[str, str], exc: BaseException) -> RunDirError:
    """One line for a database that refused us (down, wrong password, not a database file)."""
    sa = require("sqlalchemy", "tune")
    shown = _short(sa.engine.make_url(spec["url"]).render_as_string(hide_password=True))
    reason = _short(first_line(getattr(exc, "orig", None) or exc), 120)
    if spec["local"] == "no":
        return RunDirError(
            f"cannot open tune.storage {shown!r}: {reason}; check that the server runs and the "
            "URL (user, password, database) is right"
        )
    return RunDirError(
        f"cannot open the study's database {shown!r}: {reason}; move the file away to start a "
        "new study, or pass another --study-dir"
    )


class Requeue:
    """Re-queue a failed trial as a WAITING copy with the same params and slot, at most
    `max_retry` times per original (Optuna's retry bookkeeping: `failed_trial`,
    `retry_history`). Used for stale heartbeats and for orphans found under the study lock."""

    def __init__(self, max_retry: int):
        self.max_retry = max_retry

    def __call__(self, study: Any, trial: Any) -> None:
        optuna = require("optuna", "tune")
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        if len(history) > self.max_retry:
            return
        system = {k: v for k, v in trial.system_attrs.items() if k == "fixed_params"}
        system.update({"failed_trial": history[0], "retry_history": history})
        study.add_trial(
            optuna.create_trial(
                state=optuna.trial.TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                user_attrs={k: v for k, v in trial.user_attrs.items() if k in KEEP_ON_RETRY},
                system_attrs=system,
            )
        )


def recover_orphans(study: Any, max_retry: int) -> list[int]:
    """Fail RUNNING trials (their process is gone: we hold the study lock) and re-queue them and
    interrupted ones, up to `max_retry` times each. Returns the numbers re-queued."""
    optuna = require("optuna", "tune")
    TrialState = optuna.trial.TrialState
    requeue = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        requeue.append(t.number)
    retried = retried_numbers(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.user_attrs.get(INTERRUPTED) and t.number not in retried:
            requeue.append(t.number)
    retry = Requeue(max_retry)
    trials = study.get_trials(deepcopy=True)
    for number in sorted(set(requeue)):
        retry(study, trials[number])
    return sorted(set(requeue))


def retried_numbers(study: Any) -> dict[int, int]:
    """Trial number -> the number of the trial that re-ran it."""
    return retried_in(study.get_trials(deepcopy=False))


def retried_in(trials: list[Any]) -> dict[int, int]:
    out: dict[int, int] = {}
    for t in trials:
        for number in t.system_attrs.get("retry_history", []):
            out[number] = t.number
    return out


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
