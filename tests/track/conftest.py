"""Runs the tracking tests share: one tiny run logged to TensorBoard and MLflow, with a guard
event on the way (a NaN loss at step 7: skipped), trained through the Python API so its end
writes report.html too. Runs below `track_root` share one MLflow store (mlflow.db beside
them), which a first run creates once (a new SQLite store migrates its schema)."""

from __future__ import annotations

from pathlib import Path

import pytest

import genlab
from testkit import TINY

TRACKED = [
    *TINY,
    "train.max_steps=20",
    "train.eval_every=10",
    "train.sample_every=10",
    "train.checkpoint_every=10",
    "guard.inject=[{step: 7, kind: nan_loss}]",
    "track.tensorboard=true",
    "track.mlflow=true",
]


@pytest.fixture(scope="session")
def track_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tracking")


@pytest.fixture(scope="session")
def tracked_run(track_root: Path) -> Path:
    run = track_root / "tracked"
    genlab.train(None, run, TRACKED)
    return run
