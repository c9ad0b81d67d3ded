"""The run directory and its file names (the contract in ARCHITECTURE.md)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from genlab.errors import RunDirError
from genlab.fileio import require_writable


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def tokenizer_dir(self) -> Path:
        return self.root  # tokenizer.json sits at the top of the run

    @property
    def final_metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def diagnosis(self) -> Path:
        return self.root / "diagnosis.txt"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"

    @property
    def mlflow_run(self) -> Path:
        """mlflow.json: the tracking URI and run id this run logs to (a resume continues it)."""
        return self.root / "mlflow.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def lock(self) -> Path:
        """Held (flock) by the process training the run: `genlab runs` shows it as running."""
        return self.root / ".running"

    def sample_files(self, step: int) -> list[Path]:
        """The samples written at `step`: `step-<N>.txt|png` and `<kind>-step-<N>.png`."""
        if not self.samples.is_dir():
            return []
        return sorted(p for p in self.samples.glob(f"*step-{step}.*") if sample_step(p) == step)


def sample_step(path: Path) -> int | None:
    """N of a sample file named `[kind-]step-N.ext` (None for other names)."""
    tail = path.stem.rpartition("step-")[2]
    return int(tail) if tail.isdigit() else None


class RunLock:
    """An exclusive flock on RUN_DIR/.running while a process trains the run. The kernel drops
    it when the process dies however it dies, so a held lock means a live trainer."""

    def __init__(self, run: RunDir):
        self.path = run.lock
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock (False when another process holds it: then this one trains unmarked)."""
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def is_running(run: RunDir) -> bool:
    """Whether a live process holds the run's lock."""
    if not run.lock.is_file():
        return False
    probe = RunLock(run)
    if probe.acquire():
        probe.release()
        return False
    return True


def check_new(root: Path, overwrite: bool) -> None:
    """The checks `prepare_new` makes, without writing anything (a launcher runs them before
    any worker starts)."""
    if root.exists() and not root.is_dir():
        raise RunDirError(
            f"run directory {str(root)!r} is a file; pass --run-dir with a directory path"
        )
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise RunDirError(
            f"run directory {str(root)!r} is not empty; pass --overwrite to replace it, "
            "--run-dir to choose another, or `genlab resume` to continue it"
        )
    existing = next((p for p in (root, *root.absolute().parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise RunDirError(
            f"run directory {str(root)!r} cannot be made: {str(existing)!r} is a file; pass "
            "--run-dir with a directory path"
        )
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(
            f"run directory {str(root)!r} cannot be written ({str(existing)!r} is read-only "
            "for you); pass --run-dir with a writable location"
        )
    require_writable(root, "--run-dir")  # what the permission bits above cannot tell


def prepare_new(root: Path, overwrite: bool) -> RunDir:
    """Make an empty run directory; refuse a non-empty one unless `overwrite`."""
    check_new(root, overwrite)
    try:
        if root.is_dir() and any(root.iterdir()):
            for child in root.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(
            f"run directory {str(root)!r} cannot be made ({exc.strerror or type(exc).__name__}); "
            "pass --run-dir with a writable directory path"
        ) from None
    return RunDir(root)


def open_existing(root: Path) -> RunDir:
    run = RunDir(root)
    if not run.config.is_file():
        raise RunDirError(
            f"{str(root)!r} is not a genlab run directory (no config.yaml); pass the directory "
            "`genlab train` wrote, e.g. runs/lm"
        )
    return run


def load_run_config(run: RunDir, overrides: list[str] | None = None):
    """The config a run was trained with (plus `overrides`). An empty or damaged config.yaml
    is an error: defaults would silently describe another model."""
    from genlab import config

    raw = config.read_yaml_mapping(run.config)
    if not raw:
        raise RunDirError(
            f"{str(run.config)!r} is empty, so the run's settings are lost; restore it from "
            "a checkpoint (checkpoints/step-N/config.yaml holds a copy)"
        )
    return config.load(run.config, overrides or [])
