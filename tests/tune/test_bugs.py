"""A bug in genlab is not a failed trial like the others: its traceback is kept in the study,
the first one lets the search go on, the second stops it (exit code 1). User errors and guard
aborts stay ordinary failed trials."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tunekit import FAST, load_trials, write_study_config

import genlab.training.loop as loop
from genlab.errors import DataError, GuardAbort
from genlab.tuning import run_study
from genlab.tuning.bugs import StudyBug

TUNE = {
    "method": "random",
    "space": {"optim.lr": {"type": "float", "low": 1e-3, "high": 3e-3}},
}


def _metric_of_a_missing_split(metrics: dict[str, float]) -> float:
    return metrics["test/loss"]  # an internal KeyError: the kind of slip the rule is for


def _buggy_train(*args, **kwargs):
    return _metric_of_a_missing_split({"val/loss": 1.0})


def _scripted_train(monkeypatch, script: list[str]) -> list[str]:
    """Replace the training loop: each call does the next item of `script`."""
    real, calls = loop.train, []

    def train(cfg, run_dir, **kwargs):
        what = script[len(calls)]
        calls.append(what)
        if what == "guard":
            raise GuardAbort("guard gave up (scripted)")
        if what == "user":
            raise DataError("too few documents for this fold (scripted)")
        if what == "bug":
            return _buggy_train()
        return real(cfg, run_dir, **kwargs)

    monkeypatch.setattr(loop, "train", train)
    return calls


def test_first_bug_is_recorded_and_the_second_stops_the_study(tmp_path, monkeypatch, no_run_plots):
    calls = _scripted_train(monkeypatch, ["guard", "user", "bug", "ok", "bug", "ok", "ok"])
    path = write_study_config(tmp_path, {**TUNE, "n_trials": 7})
    study_dir = tmp_path / "s"

    with pytest.raises(StudyBug) as stopped:
        run_study(path, FAST, study_dir, workers=1)

    # The search went on after the guard abort, the user error and the first bug (a trial
    # completed after it), and stopped at the second bug: trials 5 and 6 never ran (they stay
    # queued for the next `genlab tune`).
    assert calls == ["guard", "user", "bug", "ok", "bug"]
    trials = load_trials(study_dir)
    states = ["FAIL", "FAIL", "FAIL", "COMPLETE", "FAIL", "WAITING", "WAITING"]
    assert [t.state.name for t in trials] == states
    trials = trials[:5]
    files = {t.number: t.user_attrs.get("error_file") for t in trials}
    assert files == {
        0: None,
        1: None,
        2: "errors/trial-0002.txt",
        3: None,
        4: "errors/trial-0004.txt",
    }
    message = str(stopped.value)
    assert str(study_dir / "errors/trial-0002.txt") in message
    assert str(study_dir / "errors/trial-0004.txt") in message

    text = (study_dir / "errors/trial-0002.txt").read_text()
    assert text.startswith("genlab ") and "trial 2 (all-seed1337)" in text
    assert "Traceback (most recent call last)" in text
    assert "in _metric_of_a_missing_split" in text and "KeyError: 'test/loss'" in text

    rows = list(csv.DictReader((study_dir / "trials.csv").open()))
    assert [r["error_file"] for r in rows] == ["", "", files[2], "", files[4]]
    assert rows[0]["failure"] == "all-seed1337: guard abort (no event logged)"
    assert rows[1]["failure"].startswith("all-seed1337: DataError: too few documents")
    assert rows[2]["failure"].startswith("all-seed1337: bug: KeyError")
    assert not (study_dir / "errors/trial-0000.txt").exists()
    assert sorted(p.name for p in (study_dir / "errors").iterdir()) == [
        "trial-0002.txt",
        "trial-0004.txt",
    ]


def test_a_bug_in_the_final_stage_counts_and_its_run_is_retried(
    tmp_path, monkeypatch, no_run_plots
):
    real = loop.train

    def train(cfg, run_dir, **kwargs):
        if Path(run_dir).parent.name == "final":
            return _buggy_train()
        return real(cfg, run_dir, **kwargs)

    monkeypatch.setattr(loop, "train", train)
    tune = {**TUNE, "n_trials": 1, "final": {"top_k": 1, "seeds": 3}}
    path = write_study_config(tmp_path, tune)
    study_dir = tmp_path / "s"
    with pytest.raises(StudyBug, match="final-0000-seed11338"):
        run_study(path, FAST, study_dir, workers=1)
    results = json.loads((study_dir / "final/results.json").read_text())
    assert sorted(results) == ["0-seed11337", "0-seed11338"]  # stopped before the third seed
    assert [r["error_file"] for r in results.values()] == [
        "errors/final-0000-seed11337.txt",
        "errors/final-0000-seed11338.txt",
    ]
    assert "KeyError" in (study_dir / "errors/final-0000-seed11337.txt").read_text()
    assert (study_dir / "trials.csv").is_file()  # written before the final stage

    # Once genlab is fixed, the same command re-runs the final runs that met the bug (two
    # seeds now, to keep the test short).
    monkeypatch.setattr(loop, "train", real)
    result = run_study(path, [*FAST, "tune.final.seeds=2"], study_dir, workers=1)
    assert result.n_complete == 1 and [len(r.values) for r in result.final] == [2]
    results = json.loads((study_dir / "final/results.json").read_text())
    assert sorted(results) == ["0-seed11337", "0-seed11338"]
    assert all("value" in r and "error_file" not in r for r in results.values())


INJECT = """
import genlab.training.loop as loop


def broken_train(*args, **kwargs):
    raise IndexError("injected bug")


loop.train = broken_train
"""


@pytest.mark.slow
def test_genlab_tune_with_workers_stops_at_the_second_bug_with_exit_1(tmp_path):
    # Every worker process (and the parent) starts with the bug injected by sitecustomize.
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(INJECT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(inject), *sys.path])
    path = write_study_config(tmp_path, {**TUNE, "n_trials": 8})
    study_dir = tmp_path / "s"
    genlab = Path(sys.executable).with_name("genlab")
    proc = subprocess.run(
        [genlab, "tune", str(path), *FAST, "--workers", "2", "--study-dir", str(study_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "StudyBug: genlab failed unexpectedly in" in proc.stderr
    trials = [t for t in load_trials(study_dir) if t.state.name != "WAITING"]
    # Each worker sees the other's bugs in the journal: both stop long before 8 trials.
    assert 2 <= len(trials) <= 4
    assert all(t.state.name == "FAIL" and t.user_attrs["error_file"] for t in trials)
    for t in trials:
        text = (study_dir / t.user_attrs["error_file"]).read_text()
        assert "in broken_train" in text and "IndexError: injected bug" in text
        assert str(study_dir / t.user_attrs["error_file"]) in proc.stderr
    rows = list(csv.DictReader((study_dir / "trials.csv").open()))
    assert sorted(r["error_file"] for r in rows) == sorted(
        t.user_attrs["error_file"] for t in trials
    )
