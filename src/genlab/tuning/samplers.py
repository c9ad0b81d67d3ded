"""Optuna samplers and pruners from the `tune:` section.

Pruner resources: a trial with a single training run reports the metric at each evaluation,
so resources are training steps. A trial with several runs (CV folds x seeds) reports, after
each finished run u, the mean over runs 0..u; every trial walks the runs in the same order, so
the pruner always compares fold k with fold k, never a fold as if it were a later epoch.
"""

from __future__ import annotations

import warnings
from typing import Any

from genlab.errors import require
from genlab.tuning.schema import TuneConfig


def build_sampler(tune: TuneConfig, seed: int) -> Any:
    """The sampler for `tune.method`. Grid trials are enqueued with fixed params (see
    genlab.tuning.runner), so grid studies use a random sampler only as a placeholder."""
    optuna = require("optuna", "tune")
    with warnings.catch_warnings():
        # QMC and GP are marked experimental in Optuna; the warning says nothing actionable.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _sampler(optuna, tune, seed)


def _sampler(optuna: Any, tune: TuneConfig, seed: int) -> Any:
    s = optuna.samplers
    startup = {} if tune.startup_trials is None else {"n_startup_trials": tune.startup_trials}
    conditional = any(spec.when for spec in tune.space.values())
    method = tune.method
    if method in ("random", "grid"):
        return s.RandomSampler(seed=seed)
    if method == "qmc":
        return s.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
    if method == "tpe":
        # multivariate TPE models interactions; `group` keeps conditional subspaces separate.
        return s.TPESampler(
            seed=seed, multivariate=True, group=conditional, constant_liar=True, **startup
        )
    if method == "gp":
        return s.GPSampler(seed=seed, warn_independent_sampling=False, **startup)
    require("cmaes", "tune")  # CmaEsSampler needs the `cmaes` package
    return s.CmaEsSampler(seed=seed, warn_independent_sampling=False, **startup)


def build_pruner(tune: TuneConfig, max_steps: int, eval_every: int, n_runs: int) -> Any:
    """The pruner for `tune.pruner`, with resources in steps (one run) or runs (several)."""
    optuna = require("optuna", "tune")
    p = optuna.pruners
    cfg = tune.pruning
    if tune.pruner == "none":
        return p.NopPruner()
    if n_runs > 1:
        min_resource, max_resource, warmup = 1, n_runs, cfg.warmup
    else:
        min_resource, max_resource = eval_every, max_steps
        warmup = cfg.warmup * eval_every
    if tune.pruner == "median":
        return p.MedianPruner(n_startup_trials=cfg.startup_trials, n_warmup_steps=warmup)
    if tune.pruner == "asha":
        return p.SuccessiveHalvingPruner(
            min_resource=max(min_resource, warmup),
            reduction_factor=cfg.reduction_factor,
        )
    return p.HyperbandPruner(
        min_resource=max(min_resource, warmup),
        max_resource=max(max_resource, min_resource),
        reduction_factor=cfg.reduction_factor,
    )
