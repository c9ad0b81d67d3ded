"""Whole studies on the TINY model: grid coverage with 1 and 2 workers, failures recorded,
best.yaml trains as is, one-worker reproducibility, the final stage on fresh seeds."""

from __future__ import annotations

import csv
import re
from types import SimpleNamespace

import pytest
import yaml
from rich.console import Console
from tunekit import FAST, load_trials, point, write_study_config

from genlab import config
from genlab.training.loop import train
from genlab.tuning import print_summary, run_study
from genlab.tuning.final import FinalRow
from genlab.tuning.report import final_notes

GRID = {
    "method": "grid",
    "space": {
        "optim.lr": {"type": "categorical", "choices": [3e-3, 10.0]},
        "model.dropout": {"type": "float", "low": 0.0, "high": 0.1, "step": 0.1},
    },
}
# lr=10 (the schema's largest) turns the loss NaN at once; the guard aborts at the third event.
ABORT_FAST = ["guard.abort_after=3"]


def test_grid_one_worker_covers_each_point_once_and_records_failures(tmp_path):
    path = write_study_config(tmp_path, GRID)
    study_dir = tmp_path / "s"
    result = run_study(path, [*FAST, *ABORT_FAST], study_dir, workers=1)

    trials = load_trials(study_dir)
    assert sorted(point(t) for t in trials) == sorted(
        (("model.dropout", d), ("optim.lr", lr)) for lr in (3e-3, 10.0) for d in (0.0, 0.1)
    )
    states = {point(t): t.state.name for t in trials}
    assert [s for p, s in states.items() if dict(p)["optim.lr"] == 10.0] == ["FAIL", "FAIL"]
    assert result.n_complete == 2 and result.n_failed == 2
    for _number, reason in result.failures:
        # lr=10 blows the loss up (divergence) or to NaN at once: 3 events, then abort.
        assert re.fullmatch(
            r"all-seed1337: guard abort at step \d+: (nonfinite_loss|loss_divergence) "
            r"\(3 guard events\)",
            reason,
        ), reason

    rows = list(csv.DictReader(result.trials_csv.open()))
    assert len(rows) == 4
    failed = [r for r in rows if r["state"] == "FAIL"]
    assert all("guard abort at step" in r["failure"] for r in failed)
    assert all(r["error_file"] == "" for r in rows)  # a guard abort is not a bug
    assert not (study_dir / "errors").exists()
    # "kindxN" per event kind, space separated; three events in all before the abort.
    for r in failed:
        counts = [int(part.rsplit("x", 1)[1]) for part in r["guard_events"].split()]
        assert sum(counts) == 3, r["guard_events"]
    assert {p.name for p in result.plots} >= {"history.png", "slice.png"}
    shown = _summary(result)
    assert "2 complete, 0 pruned, 2 failed" in shown
    assert f"best: trial {result.best_trial}, val/loss {result.best_value:.4g}" in shown
    assert shown.count("failed trial") == 2 and "guard abort at step" in shown

    # Running the same command again resumes: the grid is done, nothing runs twice.
    again = run_study(path, [*FAST, *ABORT_FAST], study_dir, workers=1)
    assert len(load_trials(study_dir)) == 4
    assert again.best_trial == result.best_trial

    # best.yaml is a complete config without the search, and trains as is.
    raw = yaml.safe_load(result.best_config.read_text())
    assert "tune" not in raw and raw["optim"]["lr"] == 3e-3
    cfg = config.load(result.best_config)
    assert cfg.optim.lr == 3e-3 and cfg.tune.space == {}
    run = train(cfg, tmp_path / "best-run")
    assert run.step == 10 and run.final_metrics["val/loss"] > 0
    # It says what training it gives: the search's run of that config on seed 1337, exactly
    # (the study's value may be a mean over seeds: the header says why they differ).
    header = result.best_config.read_text()
    best = next(t for t in load_trials(study_dir) if t.number == result.best_trial)
    search_run = best.user_attrs["values"]["all-seed1337"]
    assert "It trains once, on seed 1337" in header and f"all-seed1337 {search_run:.6g}" in header
    assert run.final_metrics["val/loss"] == pytest.approx(search_run, rel=1e-6)
    assert raw["train"]["progress"] is True  # the trials' progress: false is not inherited


def test_final_notes_say_when_intervals_overlap_and_when_the_search_best_lost():
    close = [FinalRow(7, {}, [2.0, 2.2]), FinalRow(3, {}, [2.1, 2.3])]
    apart = [FinalRow(7, {}, [1.0, 1.01]), FinalRow(3, {}, [3.0, 3.01])]

    def notes(rows, search_best):
        result = SimpleNamespace(
            final=rows, winner=rows[0], direction="minimize", top=[{"number": search_best}]
        )
        return final_notes(result)

    # t(0.975, 1) * sd / sqrt(2) = 12.706 * 0.1414 / 1.414 = 1.27 each: 0.1 apart overlaps.
    (overlap,) = notes(close, search_best=7)
    assert "trial 7 (2.1 ± 1.271) and trial 3 (2.2 ± 1.271) have overlapping" in overlap
    assert notes(apart, search_best=7) == []
    (lost,) = notes(apart, search_best=3)
    assert "search's best was trial 3 (history.png's best line)" in lost
    assert "trial 7 did better and is best.yaml" in lost


@pytest.mark.slow
def test_grid_two_workers_covers_each_point_once(tmp_path):
    grid = {
        "method": "grid",
        "space": {
            "optim.lr": {"type": "categorical", "choices": [1e-3, 3e-3, 1e-2]},
            "model.dropout": {"type": "float", "low": 0.0, "high": 0.1, "step": 0.1},
        },
    }
    path = write_study_config(tmp_path, grid)
    study_dir = tmp_path / "s"
    result = run_study(path, FAST, study_dir, workers=2)
    assert (study_dir / "journal.log").exists() and not (study_dir / "study.db").exists()
    trials = load_trials(study_dir)
    assert len(trials) == 6
    assert len({point(t) for t in trials}) == 6
    assert result.n_complete == 6
    # Resuming with two workers again runs nothing new.
    run_study(path, FAST, study_dir, workers=2)
    assert len(load_trials(study_dir)) == 6


@pytest.mark.slow
def test_one_worker_is_reproducible_and_final_stage_uses_fresh_seeds(tmp_path):
    tune = {
        "method": "random",
        "n_trials": 3,
        "space": {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
    }
    path = write_study_config(tmp_path, tune)
    a = run_study(path, FAST, tmp_path / "a", workers=1)
    b = run_study(path, FAST, tmp_path / "b", workers=1)
    ta, tb = load_trials(tmp_path / "a"), load_trials(tmp_path / "b")
    assert [(t.params, t.value) for t in ta] == [(t.params, t.value) for t in tb]
    assert a.best_params == b.best_params

    final = run_study(path, [*FAST, "tune.final.top_k=2", "tune.final.seeds=2"], tmp_path / "a")
    assert len(load_trials(tmp_path / "a")) == 3  # resumed: no new search trials
    assert [len(r.values) for r in final.final] == [2, 2]
    assert all(r.ci95 > 0 for r in final.final)
    assert final.winner is not None and final.best_trial == final.winner.trial
    assert final.best_value == pytest.approx(final.winner.mean)
    seeds = sorted(p.name for p in (tmp_path / "a" / "final").iterdir() if p.is_dir())
    assert seeds[0].endswith("seed11337")  # fresh: the search used seed 1337
    shown = _summary(final)
    assert "final: top configs on fresh seeds" in shown
    assert f"{final.winner.trial} *" in shown  # the winner is marked in the final table
    # One run per search trial: the noise comes from the final stage's 2 configs x 2 seeds,
    # whose interaction sd is |x11 - x12 - x21 + x22| / 2.
    (a1, a2), (b1, b2) = (r.values for r in final.final)
    assert final.noise.noise == pytest.approx(abs(a1 - a2 - b1 + b2) / 2)
    assert final.noise.source.startswith("final stage") and "noise: a trial's val/loss" in shown


def _summary(result) -> str:
    console = Console(record=True, width=250)
    print_summary(result, console=console)
    return console.export_text()


def test_cli_tune_runs_a_study_and_best_yaml_trains(tmp_path, capsys):
    from genlab.cli import main

    path = write_study_config(
        tmp_path,
        {
            "method": "random",
            "n_trials": 2,
            "space": {"optim.lr": {"type": "float", "low": 1e-3, "high": 3e-3}},
        },
    )
    study_dir = tmp_path / "cli-study"
    assert main(["tune", str(path), *FAST, "--study-dir", str(study_dir)]) == 0
    assert (study_dir / "best.yaml").is_file() and (study_dir / "trials.csv").is_file()
    assert main(["tune", str(path), *FAST, "--workers", "0"]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err
    best = config.load(study_dir / "best.yaml")
    assert 1e-3 <= best.optim.lr <= 3e-3
