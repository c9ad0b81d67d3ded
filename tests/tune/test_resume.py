"""Killing a `genlab tune` process mid-trial loses nothing: re-running the command continues."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from tunekit import FAST, load_trials, write_study_config

from genlab.tuning import run_study

TUNE = {
    "method": "random",
    "n_trials": 4,
    "space": {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
}
STEPS = ["train.max_steps=30", "train.eval_every=30", "train.checkpoint_every=10"]


@pytest.mark.slow
def test_resume_after_sigkill_keeps_finished_trials_and_reruns_the_killed_one(tmp_path):
    path = write_study_config(tmp_path, TUNE)
    study_dir = tmp_path / "s"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    genlab = str(Path(sys.executable).with_name("genlab"))
    cmd = [genlab, "tune", str(path), *FAST, *STEPS]
    log = tmp_path / "tune.log"
    proc = subprocess.Popen(
        [*cmd, "--study-dir", str(study_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        start_new_session=True,
    )
    try:
        # A RUNNING trial that has started training (its params are drawn).
        _wait_for(
            lambda: _states(study_dir).count("COMPLETE") >= 2 and _training(study_dir),
            proc,
            log,
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {t.number: (t.params, t.value) for t in load_trials(study_dir) if t.value is not None}
    running = [t.number for t in load_trials(study_dir) if t.state.name == "RUNNING"]
    assert len(before) >= 2 and len(running) == 1

    result = run_study(path, [*FAST, *STEPS], study_dir, workers=1)

    trials = load_trials(study_dir)
    after = {t.number: (t.params, t.value) for t in trials if t.value is not None}
    assert all(after[n] == v for n, v in before.items())  # finished trials kept as they were
    killed = trials[running[0]]
    assert killed.state.name == "FAIL"
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE"
    assert retry[0].params == killed.params
    assert result.n_complete == 4 and result.n_failed == 0
    rows = result.trials_csv.read_text()
    assert f"re-run as trial {retry[0].number}" in rows


def _states(study_dir: Path) -> list[str]:
    """The trial states, read without writing: opening the database through Optuna would
    create its tables, racing the study process that is creating them."""
    db = study_dir / "study.db"
    if not db.exists():
        return []
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
            return [row[0] for row in con.execute("SELECT state FROM trials ORDER BY number")]
    except sqlite3.OperationalError:
        return []  # the study is being created


def _training(study_dir: Path) -> bool:
    states = _states(study_dir)
    running = [n for n, state in enumerate(states) if state == "RUNNING"]
    return any((study_dir / "trials" / f"{n:04d}").exists() for n in running)


def _wait_for(cond, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the study process exited ({proc.returncode}): {log.read_text()}")
        time.sleep(0.2)
    raise AssertionError("the study process did not reach the expected state in time")
