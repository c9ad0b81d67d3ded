"""Runs the tracking tests share: one tiny run logged to TensorBoard and MLflow, with a guard
event on the way (a NaN loss at step 7: skipped), trained through the Python API so its end
writes report.html too; and one tiny study (two grid points, one of them failing) tracked in
MLflow. Runs below `track_root` share one MLflow store (mlflow.db beside
them), which a first run creates once (a new SQLite store migrates its schema)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import genlab
from genlab.tuning import run_study
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


STUDY_RUN = [*TINY, "train.max_steps=10", "train.eval_every=10", "train.checkpoint_every=10"]
TUNE = {
    "method": "grid",
    "metric": "val/loss",
    # lr=10 (the schema's largest) turns the loss NaN or divergent at once: the guard aborts
    # that trial (a failed trial).
    "space": {"optim.lr": {"type": "categorical", "choices": [3e-3, 10.0]}},
    "final": {"top_k": 1, "seeds": 2},
}


@pytest.fixture(scope="session")
def study(track_root: Path) -> Path:
    config = track_root / "study.yaml"
    config.write_text(yaml.safe_dump({"name": "study", "tune": TUNE}))
    study_dir = track_root / "study"
    overrides = [*STUDY_RUN, "guard.abort_after=3", "track.mlflow=true"]
    run_study(config, overrides, study_dir, workers=1)
    first = json.loads((study_dir / "mlflow.json").read_text())
    run_study(config, overrides, study_dir, workers=1)  # again: the grid is done, resumes
    assert json.loads((study_dir / "mlflow.json").read_text())["run_id"] == first["run_id"]
    return study_dir
