"""Bad tuning input through the real `genlab tune` command: one line, exit 2, no traceback, no
hang (issue 21, items 21-22), and worker processes that die with their parent."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tunekit import FAST, load_trials, write_study_config

from genlab.tuning.queue import live
from genlab.tuning.space import MAX_GRID_POINTS

GENLAB = str(Path(sys.executable).with_name("genlab"))
LR = {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}
RANDOM = {"method": "random", "n_trials": 2, "space": LR}
# Hide every PostgreSQL driver from a process (find_spec answers None for a None entry).
NO_PG_DRIVER = "import sys\nsys.modules.update(psycopg2=None, psycopg=None, pg8000=None)\n"


def _genlab_tune(tmp_path: Path, tune: dict, *args: str, hide_pg: bool = False):
    config = write_study_config(tmp_path, tune)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GENLAB_CACHE_DIR": str(tmp_path / "cache")}
    path = [*sys.path]
    if hide_pg:
        (tmp_path / "site").mkdir()
        (tmp_path / "site" / "sitecustomize.py").write_text(NO_PG_DRIVER)
        path.insert(0, str(tmp_path / "site"))
    env["PYTHONPATH"] = os.pathsep.join(path)
    return subprocess.run(
        [GENLAB, "tune", str(config), *FAST, *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,  # a grid that enumerates 1e15 points would never return
    )


def _one_line_exit_2(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genlab: error: "), proc.stderr
    assert len(lines[0]) <= 300 + len("genlab: error: ")
    return lines[0]


@pytest.mark.parametrize(
    "tune, args, hide_pg, expected",
    [
        ({"storage": "not a url"}, [], False, "tune.storage 'not a url' is not a database URL"),
        (
            {"storage": "postgresql://me:secret@127.0.0.1:5432/db"},
            [],
            True,
            "needs a postgresql driver and none is installed; install one with: pip install",
        ),
        ({"storage": "oracle://me@host/db"}, [], False, "genlab runs studies on postgresql"),
        ({}, ["--study-dir", "a-file"], False, "--study-dir 'a-file' is a file"),
        ({}, ["--study-dir", "a-file/sub"], False, "cannot use study dir 'a-file/sub'"),
    ],
    ids=["not-a-url", "no-postgres-driver", "unknown-backend", "study-dir-file", "under-a-file"],
)
def test_bad_storage_or_study_dir_is_one_line_exit_2(tmp_path, tune, args, hide_pg, expected):
    (tmp_path / "a-file").write_text("not a directory\n")
    proc = _genlab_tune(tmp_path, {**RANDOM, **tune}, *args, hide_pg=hide_pg)
    line = _one_line_exit_2(proc)
    assert expected in line
    assert "secret" not in line  # a password in a URL is never echoed
    assert (tmp_path / "a-file").read_text() == "not a directory\n"


def test_an_unreachable_database_is_one_line_exit_2(tmp_path):
    from testkit import free_port

    url = f"postgresql://me:secret@127.0.0.1:{free_port()}/db"  # nothing listens there
    line = _one_line_exit_2(_genlab_tune(tmp_path, {**RANDOM, "storage": url}))
    assert "cannot open tune.storage 'postgresql+psycopg2://me:***@127.0.0.1" in line
    assert "check that the server runs" in line and "secret" not in line


@pytest.mark.parametrize(
    "key, spec, size",
    [
        ("train.max_steps", {"type": "int", "low": 1, "high": 1e12}, "1,000,000,000,000"),
        (
            "model.dropout",
            {"type": "float", "low": 0.0, "high": 0.5, "step": 1e-15},
            "500,000,000,000,00",  # 0.5 / 1e-15 (+ 1), as float division rounds it
        ),
    ],
    ids=["int-1..1e12", "float-step-1e-15"],
)
def test_a_grid_above_the_size_limit_is_refused_naming_its_size(tmp_path, key, spec, size):
    started = time.monotonic()
    proc = _genlab_tune(tmp_path, {"method": "grid", "space": {key: spec}})
    line = _one_line_exit_2(proc)
    assert time.monotonic() - started < 100  # no enumeration: it used to never return
    assert size in line and f"above the limit of {MAX_GRID_POINTS:,}" in line


@pytest.mark.slow
@pytest.mark.multiproc
def test_workers_die_with_a_killed_parent_and_the_rerun_finishes_the_study(tmp_path):
    tune = {**RANDOM, "n_trials": 4}
    config = write_study_config(tmp_path, tune)
    study_dir = tmp_path / "s"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [GENLAB, "tune", str(config), *FAST, "train.max_steps=60", "train.eval_every=30"]
    cmd += ["--workers", "2", "--study-dir", str(study_dir)]
    log = tmp_path / "first.log"
    parent = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    pids = _wait_for_training_workers(study_dir, parent, log)

    parent.kill()  # the parent only, as `kill -9 PID` would; its workers are not told
    parent.wait()
    end = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), "worker processes outlived their parent"

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Traceback" not in rerun.stderr and "Cannot tell" not in rerun.stderr
    finished = [t for t in live(load_trials(study_dir)) if t.state.is_finished()]
    assert len(finished) == 4 and all(t.state.name == "COMPLETE" for t in finished)


def _wait_for_training_workers(study_dir: Path, parent: subprocess.Popen, log: Path) -> list[int]:
    """The pids of both workers once at least one trial is training."""
    lock = study_dir / ".workers.lock"
    end = time.monotonic() + 240
    while time.monotonic() < end:
        pids = [int(p) for p in lock.read_text().split()] if lock.exists() else []
        if len(pids) == 2 and any((study_dir / "trials").glob("*")):
            return pids
        assert parent.poll() is None, log.read_text()[-2000:]
        time.sleep(0.2)
    raise AssertionError("the workers never started a trial")


def _alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie may wait for a reaper in a container)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "Z" not in state.split()[1]


def test_a_rerun_that_changes_the_fixed_settings_is_refused_naming_them(tmp_path):
    """Issue 18 item 2: a rerun with more steps per trial would join the study and be ranked
    against the shorter trials; more trials (or how a run reports) are fine."""
    first = _genlab_tune(tmp_path, RANDOM, "tune.n_trials=1", "--study-dir", "s")
    assert first.returncode == 0, first.stderr[-2000:]
    csv_before = (tmp_path / "s" / "trials.csv").read_text()

    line = _one_line_exit_2(
        _genlab_tune(tmp_path, RANDOM, "tune.n_trials=2", "train.max_steps=12", "--study-dir", "s")
    )
    assert "study 'study' in 's' was created with other settings: train.max_steps 10 -> 12" in line
    assert "another --study-dir" in line
    assert len(load_trials(tmp_path / "s")) == 1  # nothing joined the study
    assert (tmp_path / "s" / "trials.csv").read_text() == csv_before

    searched = {
        **RANDOM,
        "space": {**LR, "optim.weight_decay": {"type": "float", "low": 0, "high": 0.1}},
    }
    line = _one_line_exit_2(_genlab_tune(tmp_path, searched, "--study-dir", "s"))
    assert "optim.weight_decay 0.1 -> searched" in line  # was fixed at its default

    more = _genlab_tune(
        tmp_path, RANDOM, "tune.n_trials=2", "train.progress=true", "--study-dir", "s"
    )
    assert more.returncode == 0, more.stderr[-2000:]
    assert [t.state.name for t in load_trials(tmp_path / "s")] == ["COMPLETE", "COMPLETE"]
