"""Optuna samplers and pruners from the `tune:` section: one table of builders for each,
keyed by the names `tune.method` and `tune.pruner` accept (a test checks the tables cover
exactly the schema's names).

Pruner resources: a trial with a single training run reports the metric at each evaluation,
so resources are training steps. A trial with several runs (CV folds x seeds) reports, after
each finished run u, the mean over runs 0..u; every trial walks the runs in the same order, so
the pruner always compares fold k with fold k, never a fold as if it were a later epoch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from genlab.errors import require
from genlab.tuning.schema import PruningConfig, TuneConfig


def build_sampler(tune: TuneConfig, seed: int) -> Any:
    """The sampler for `tune.method`. Grid trials are enqueued with fixed params (see
    genlab.tuning.runner), so grid studies use a random sampler only as a placeholder."""
    optuna = require("optuna", "tune")
    with warnings.catch_warnings():
        # QMC and GP are marked experimental in Optuna; the warning says nothing actionable.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SAMPLERS[tune.method](optuna.samplers, tune, seed)


def _startup(tune: TuneConfig) -> dict[str, int]:
    """Random trials before a model-based sampler takes over (None: Optuna's default)."""
    return {} if tune.startup_trials is None else {"n_startup_trials": tune.startup_trials}


def _random(s: Any, tune: TuneConfig, seed: int) -> Any:
    return s.RandomSampler(seed=seed)


def _qmc(s: Any, tune: TuneConfig, seed: int) -> Any:
    return s.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)


def _tpe(s: Any, tune: TuneConfig, seed: int) -> Any:
    # multivariate TPE models interactions; `group` keeps conditional subspaces separate.
    conditional = any(spec.when for spec in tune.space.values())
    return s.TPESampler(
        seed=seed, multivariate=True, group=conditional, constant_liar=True, **_startup(tune)
    )


def _gp(s: Any, tune: TuneConfig, seed: int) -> Any:
    return s.GPSampler(seed=seed, warn_independent_sampling=False, **_startup(tune))


def _cmaes(s: Any, tune: TuneConfig, seed: int) -> Any:
    require("cmaes", "tune")  # CmaEsSampler needs the `cmaes` package
    return s.CmaEsSampler(seed=seed, warn_independent_sampling=False, **_startup(tune))


# tune.method -> builder(optuna.samplers, tune, seed)
SAMPLERS: dict[str, Callable[[Any, TuneConfig, int], Any]] = {
    "grid": _random,
    "random": _random,
    "qmc": _qmc,
    "tpe": _tpe,
    "gp": _gp,
    "cmaes": _cmaes,
}


@dataclass(frozen=True)
class Resources:
    """What a pruner measures a trial's progress in: steps (one run) or finished runs."""

    min: int
    max: int
    warmup: int  # reports before a trial may be pruned, in the same unit


def build_pruner(tune: TuneConfig, max_steps: int, eval_every: int, n_runs: int) -> Any:
    """The pruner for `tune.pruner`, with resources in steps (one run) or runs (several)."""
    optuna = require("optuna", "tune")
    cfg = tune.pruning
    if n_runs > 1:
        res = Resources(1, n_runs, cfg.warmup)
    else:
        res = Resources(eval_every, max_steps, cfg.warmup * eval_every)
    return PRUNERS[tune.pruner](optuna.pruners, cfg, res)


def _no_pruning(p: Any, cfg: PruningConfig, res: Resources) -> Any:
    return p.NopPruner()


def _median(p: Any, cfg: PruningConfig, res: Resources) -> Any:
    return p.MedianPruner(n_startup_trials=cfg.startup_trials, n_warmup_steps=res.warmup)


def _asha(p: Any, cfg: PruningConfig, res: Resources) -> Any:
    return p.SuccessiveHalvingPruner(
        min_resource=max(res.min, res.warmup), reduction_factor=cfg.reduction_factor
    )


def _hyperband(p: Any, cfg: PruningConfig, res: Resources) -> Any:
    return p.HyperbandPruner(
        min_resource=max(res.min, res.warmup),
        max_resource=max(res.max, res.min),
        reduction_factor=cfg.reduction_factor,
    )


# tune.pruner -> builder(optuna.pruners, tune.pruning, resources)
PRUNERS: dict[str, Callable[[Any, PruningConfig, Resources], Any]] = {
    "none": _no_pruning,
    "median": _median,
    "asha": _asha,
    "hyperband": _hyperband,
}
