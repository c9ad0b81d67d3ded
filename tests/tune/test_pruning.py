"""Pruning that understands learning curves: nothing is pruned before the lr warmup is over,
the percentile and patient pruners do what Optuna documents, and Wilcoxon needs several runs.
Synthetic studies (no training): the pruner genlab builds, asked as a trial would ask it."""

from __future__ import annotations

import optuna
import pytest

from genlab import config
from genlab.errors import ConfigError
from genlab.tuning.samplers import build_pruner, pruning_start

EVAL_EVERY = 20


def _cfg(*overrides: str) -> config.ExperimentConfig:
    base = ["train.max_steps=200", f"train.eval_every={EVAL_EVERY}", "schedule.warmup_steps=50"]
    return config.load(None, [*base, *overrides])


def test_pruning_starts_after_the_lr_warmup_rounded_up_to_an_evaluation():
    # warmup 50 steps -> the first evaluation after it is step 60.
    assert pruning_start(_cfg().tune, 50, EVAL_EVERY) == 60
    # pruning.warmup evaluations more.
    assert pruning_start(_cfg("tune.pruning.warmup=2").tune, 50, EVAL_EVERY) == 100
    # A searched warmup: its longest value decides.
    searched = _cfg('tune.space={"schedule.warmup_steps": {"type": "int", "low": 0, "high": 90}}')
    assert pruning_start(searched.tune, 50, EVAL_EVERY) == 100
    # An explicit pruning.warmup_steps wins; 0: from the first evaluation on.
    explicit = _cfg("tune.pruning.warmup_steps=0")
    assert pruning_start(explicit.tune, 50, EVAL_EVERY) == EVAL_EVERY


def _study(pruner, curves: list[list[float]]) -> optuna.Study:
    """A study whose complete trials reported `curves` at steps 20, 40, ..."""
    study = optuna.create_study(pruner=pruner)
    for curve in curves:
        study.add_trial(
            optuna.trial.create_trial(
                value=curve[-1],
                intermediate_values={EVAL_EVERY * (i + 1): v for i, v in enumerate(curve)},
            )
        )
    return study


def _pruned_at(study: optuna.Study, curve: list[float]) -> int | None:
    trial = study.ask()
    for i, v in enumerate(curve):
        step = EVAL_EVERY * (i + 1)
        trial.report(v, step)
        if trial.should_prune():
            return step
    return None


GOOD = [[3.0 - 0.1 * i for i in range(10)] for _ in range(5)]  # 3.0 down to 2.1


def test_median_pruner_waits_for_the_warmup_then_prunes_a_bad_curve():
    cfg = _cfg("tune.pruner=median", "tune.pruning.startup_trials=1")
    study = _study(build_pruner(cfg.tune, cfg, n_runs=1), GOOD)
    assert _pruned_at(study, [9.0] * 10) == 60  # worse from step 20 on, pruned at the start


def test_percentile_pruner_keeps_only_the_best_quarter():
    cfg = _cfg("tune.pruner=percentile", "tune.pruning.startup_trials=1")
    pruner = build_pruner(cfg.tune, cfg, n_runs=1)
    assert isinstance(pruner, optuna.pruners.PercentilePruner)
    curves = [[2.0 + k * 0.1] * 10 for k in range(8)]  # final values 2.0 .. 2.7
    # 2.3 is better than the median (2.35) but not in the best 25% (<= 2.175): pruned here,
    # and a median pruner would keep it.
    assert _pruned_at(_study(pruner, curves), [2.3] * 10) == 60
    median = build_pruner(_cfg("tune.pruner=median", "tune.pruning.startup_trials=1").tune, cfg, 1)
    assert _pruned_at(_study(median, curves), [2.3] * 10) is None


def test_patience_spares_a_trial_that_still_improves():
    cfg = _cfg("tune.pruner=median", "tune.pruning.startup_trials=1", "tune.pruning.patience=2")
    pruner = build_pruner(cfg.tune, cfg, n_runs=1)
    assert isinstance(pruner, optuna.pruners.PatientPruner)
    improving = [9.0 - 0.5 * i for i in range(10)]  # worse than the median, but improving
    assert _pruned_at(_study(pruner, GOOD), improving) is None
    # No better than 2 evaluations ago (Optuna needs patience + 2 reports to tell): the median
    # rule applies from the 4th evaluation.
    stalled = [9.0 + 0.01 * i for i in range(10)]
    assert _pruned_at(_study(pruner, GOOD), stalled) == 80


def test_wilcoxon_needs_several_runs_per_trial():
    with pytest.raises(ConfigError, match="pruner 'wilcoxon' compares a trial with the best"):
        _cfg("tune.pruner=wilcoxon")
    cfg = _cfg("tune.pruner=wilcoxon", "tune.cv.folds=3")
    assert isinstance(build_pruner(cfg.tune, cfg, n_runs=3), optuna.pruners.WilcoxonPruner)
