"""The run directory and its file names (the contract in ARCHITECTURE.md)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from genlab.errors import RunDirError


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
