"""Several machines on one study: independent `genlab tune` processes, each with its own
--study-dir, share a real PostgreSQL database (`tune.storage`). The study runs exactly
tune.n_trials trials in total (no process runs its own n_trials), no two trials draw the same
point, a grid point never runs twice, and a worker killed mid-trial loses nothing: its trial's
heartbeat stops, another worker fails it and runs it again with the same params.

The server is the system package (`.ci/run` installs it); without one these tests skip."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from pgkit import find_bin_dir, postgres_server
from tunekit import FAST, write_study_config

from genlab.tuning.queue import live, slot_of
from genlab.tuning.storage import resolve_url

GENLAB = str(Path(sys.executable).with_name("genlab"))
# .ci/run starts a server and names it here; otherwise the tests start their own.
CI_SERVER = os.environ.get("GENLAB_TEST_POSTGRES_URL")
BIN_DIR = find_bin_dir()
pytestmark = [
    pytest.mark.multiproc,
    pytest.mark.skipif(
        CI_SERVER is None and BIN_DIR is None,
        reason="no PostgreSQL server binaries (initdb, pg_ctl) and no GENLAB_TEST_POSTGRES_URL",
    ),
]


@pytest.fixture(scope="module")
def server() -> str:
    if CI_SERVER:
        yield CI_SERVER
        return
    with postgres_server(BIN_DIR) as url:
        yield url


@pytest.fixture
def database(server: str, request: pytest.FixtureRequest) -> str:
    """A fresh database on the module's server, for one test."""
    import psycopg2

    name = "t_" + request.node.name.lower().replace("[", "_").replace("]", "")[:40]
    con = psycopg2.connect(server)
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        cur.execute(f"CREATE DATABASE {name}")
    con.close()
    return server.rsplit("/", 1)[0] + "/" + name


def _start(config: Path, study_dir: Path, *overrides: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [GENLAB, "tune", str(config), *FAST, *overrides, "--study-dir", str(study_dir)],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=resolve_url(url)).get_trials()
    except KeyError:  # the study is not created yet
        return []


def _wait(procs: list[subprocess.Popen], logs: list[Path], timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    for p, log in zip(procs, logs):
        try:
            p.wait(timeout=max(1.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                os.killpg(q.pid, signal.SIGKILL)
            tail = log.read_text()[-2000:]
            raise AssertionError(f"a worker did not finish in time:\n{tail}") from None
        assert p.returncode == 0, f"worker exit {p.returncode}:\n{log.read_text()[-3000:]}"
        assert "Traceback" not in log.read_text()


def test_three_machines_run_exactly_n_trials_and_retry_a_killed_worker(tmp_path, database):
    n_trials = 6
    tune = {
        "method": "random",
        "n_trials": n_trials,
        "storage": database,
        "heartbeat": 1,  # a dead worker's trial is failed ~3 s after its last beat
        "space": {
            "optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
            "model.dropout": {"type": "float", "low": 0.0, "high": 0.2},
        },
    }
    config = write_study_config(tmp_path, tune, name="shared")
    slow = ["train.max_steps=40", "train.eval_every=20"]  # a few seconds: time to kill one
    dirs = [tmp_path / f"machine{i}" for i in range(3)]
    logs = [tmp_path / f"machine{i}.log" for i in range(3)]
    procs = [_start(config, d, *slow, log=log) for d, log in zip(dirs, logs)]

    # Kill machine 0 in the middle of a trial: its trial dir exists and the trial is RUNNING.
    victim = None
    end = time.monotonic() + 240
    while victim is None and time.monotonic() < end:
        trials = _trials(database, "shared")
        running = {t.number for t in trials if t.state.name == "RUNNING"}
        mine = {int(p.name) for p in (dirs[0] / "trials").glob("*")} if dirs[0].exists() else set()
        if running & mine:
            victim = min(running & mine)
            os.killpg(procs[0].pid, signal.SIGKILL)
            procs[0].wait()
        else:
            assert procs[0].poll() is None, logs[0].read_text()[-2000:]
            time.sleep(0.2)
    assert victim is not None, "machine 0 never ran a trial"
    _wait(procs[1:], logs[1:])

    trials = _trials(database, "shared")
    finished = [t for t in live(trials) if t.state.is_finished()]
    # Exactly n_trials trials ran to an end, one per budget slot, all complete.
    assert len(finished) == n_trials
    assert sorted(slot_of(t) for t in finished) == [str(i) for i in range(n_trials)]
    assert all(t.state.name == "COMPLETE" for t in finished)
    assert not [t for t in trials if t.state.name == "RUNNING"]
    # The killed trial failed and ran again once, with the same params and slot.
    killed = trials[victim]
    assert killed.state.name == "FAIL"
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    assert retries[0].params == killed.params and slot_of(retries[0]) == slot_of(killed)
    # No two trials drew the same point, although every machine has the same seed.
    points = [tuple(sorted(t.params.items())) for t in finished if t not in retries]
    assert len(set(points)) == len(points)
    # A WAITING trial left over is a spare copy of a slot some finished trial holds.
    spare = [t for t in trials if t.state.name == "WAITING"]
    assert {slot_of(t) for t in spare} <= {slot_of(t) for t in finished}
    # Both survivors report the same study (named by the config, not the study dir).
    for log in logs[1:]:
        assert "study shared" in log.read_text()
    for d in dirs[1:]:
        rows = (d / "trials.csv").read_text().splitlines()
        assert len(rows) == 1 + n_trials + 1  # header, the slots, the killed attempt


def test_two_machines_run_each_grid_point_once(tmp_path, database):
    tune = {
        "method": "grid",
        "storage": database,
        "space": {
            "optim.lr": {"type": "categorical", "choices": [1e-3, 3e-3, 1e-2]},
            "model.dropout": {"type": "categorical", "choices": [0.0, 0.1]},
        },
    }
    config = write_study_config(tmp_path, tune, name="grid")
    dirs = [tmp_path / f"machine{i}" for i in range(2)]
    logs = [tmp_path / f"machine{i}.log" for i in range(2)]
    procs = [_start(config, d, log=log) for d, log in zip(dirs, logs)]
    _wait(procs, logs)

    trials = _trials(database, "grid")
    ran = [tuple(sorted(t.params.items())) for t in trials if t.state.is_finished()]
    assert sorted(ran) == sorted(
        (("model.dropout", d), ("optim.lr", lr)) for lr in (1e-3, 3e-3, 1e-2) for d in (0.0, 0.1)
    )
