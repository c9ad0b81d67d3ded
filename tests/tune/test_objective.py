"""Aggregation and the run list of a trial (no training)."""

from __future__ import annotations

import math

import pytest

from genlab.tuning.final import FinalRow, pick_winner
from genlab.tuning.objective import aggregate, trial_runs
from genlab.tuning.schema import TuneConfig


def test_runs_are_fold_major_and_named():
    tune = TuneConfig.model_validate({"cv": {"folds": 2}, "seeds": 2})
    runs = trial_runs(tune, 7)
    assert [r.name for r in runs] == ["fold0-seed7", "fold0-seed8", "fold1-seed7", "fold1-seed8"]
    assert [r.name for r in trial_runs(TuneConfig(), 7)] == ["all-seed7"]


def test_mean_plus_kstd_penalises_spread_on_the_pessimistic_side():
    values = [1.0, 2.0, 3.0]
    mean = TuneConfig.model_validate({"objective": "mean"})
    kstd = TuneConfig.model_validate({"objective": "mean_plus_kstd", "k": 2.0})
    kstd_max = TuneConfig.model_validate(
        {"objective": "mean_plus_kstd", "k": 2.0, "direction": "maximize"}
    )
    assert aggregate(values, mean) == pytest.approx(2.0)
    assert aggregate(values, kstd) == pytest.approx(4.0)
    assert aggregate(values, kstd_max) == pytest.approx(0.0)


def test_final_ci_uses_the_t_distribution():
    row = FinalRow(0, {}, [1.0, 2.0, 3.0])
    # t(0.975, 2) = 4.3027; sem = 1 / sqrt(3)
    assert row.ci95 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert math.isnan(FinalRow(0, {}, [1.0]).ci95)
    best = pick_winner([row, FinalRow(1, {}, [0.5, 0.7]), FinalRow(2, {}, [])], "minimize")
    assert best.trial == 1
