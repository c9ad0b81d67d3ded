"""Optuna samplers and pruners from the `tune:` section: one table of builders for each,
keyed by the names `tune.method` and `tune.pruner` accept (a test checks the tables cover
exactly the schema's names).

Pruner resources: a trial with a single training run reports the metric at each evaluation,
so resources are training steps, and no trial is pruned before its lr warmup is over
(`pruning_start`). A trial with several runs (CV folds x seeds) reports, after each finished
run u, the mean over runs 0..u at step u+1 (the Wilcoxon pruner: run u's own value at step u,
since it pairs run u of a trial with run u of the best trial); every trial walks the runs in the
same order, so the pruner always compares fold k with fold k, never a fold as if it were a
later epoch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from genlab.errors import require
from genlab.tuning.schema import PruningConfig, TuneConfig

AUTO_GP_MAX_TRIALS = 200  # a GP's fit grows with the cube of the trials; beyond this, TPE


def resolve_method(tune: TuneConfig, parallel: bool = False) -> tuple[str, str]:
    """The sampler `tune.method` stands for, and why (for the console and the summary).

    `auto` is Gaussian-process search where it does best and TPE elsewhere. On genlab's
    objective the good region is a ridge where two params interact (a higher lr pays only
    with a longer warmup) and often lies on the edge of the space; a GP models that
    interaction, while TPE's one-param-at-a-time densities average it away
    (benchmarks/tuning.py: GP reached random search's 30-trial best in a median of 8 trials,
    TPE not within 30). A GP needs every param numeric and unconditional, and a bounded
    budget (its fit grows with the cube of the trials), so categorical or conditional
    spaces, open-ended budgets and large ones use TPE, which handles all of them. So do
    `parallel` studies (several workers, or a database other machines may join): workers
    that fit the GP at the same moment propose the same point (the benchmark's 3-worker GP
    studies ran 3 duplicate trials), while TPE's constant liar keeps them apart."""
    if tune.method != "auto":
        return tune.method, "as set"
    kinds = [spec.type for spec in tune.space.values()]
    if any(spec.when for spec in tune.space.values()):
        return "tpe", "auto: the space has conditional params"
    if "categorical" in kinds:
        return "tpe", "auto: the space has categorical params"
    if tune.n_trials is None:
        return "tpe", "auto: no tune.n_trials budget"
    if tune.n_trials > AUTO_GP_MAX_TRIALS:
        return "tpe", f"auto: over {AUTO_GP_MAX_TRIALS} trials"
    if parallel:
        return "tpe", "auto: several workers or a shared database"
    return "gp", f"auto: {_count(len(kinds), 'numeric param')}, {_count(tune.n_trials, 'trial')}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def build_sampler(tune: TuneConfig, seed: int) -> Any:
    """The sampler for `tune.method` (`auto`: see resolve_method). Grid trials are enqueued
    with fixed params (see genlab.tuning.runner), so grid studies use a random sampler only
    as a placeholder."""
    optuna = require("optuna", "tune")
    with warnings.catch_warnings():
        # QMC and GP are marked experimental in Optuna; the warning says nothing actionable.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SAMPLERS[tune.method](optuna.samplers, tune, seed)


def trial_seed(tune: TuneConfig, base_seed: int, number: int) -> int:
    """The sampler seed for trial `number` (the sampler is rebuilt per trial, see
    genlab.tuning.worker): a hash of (base seed, number), so trial n of one study is no trial
    of a study whose seed is one more (as `base_seed + number` would be). QMC walks one
    scrambled sequence whose position the storage keeps, so it keeps one seed."""
    if tune.method == "qmc":
        return base_seed
    import numpy as np

    words = [base_seed & 0xFFFFFFFF, (base_seed >> 32) & 0xFFFFFFFF, number]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def _random(s: Any, tune: TuneConfig, seed: int) -> Any:
    return s.RandomSampler(seed=seed)


def _qmc(s: Any, tune: TuneConfig, seed: int) -> Any:
    return s.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)


def _tpe(s: Any, tune: TuneConfig, seed: int) -> Any:
    # One by one (independent TPE) unless asked: on genlab's objective a short run's noise and
    # params that barely matter make the joint model chase lucky points (benchmarks/tuning.py,
    # docs/ARCHITECTURE.md). A conditional space needs the joint model with `group`, which
    # keeps each condition's subspace apart. constant_liar: a worker treats the trials others
    # are running as bad, so k workers do not all sample the same region.
    conditional = any(spec.when for spec in tune.space.values())
    return s.TPESampler(
        seed=seed,
        multivariate=tune.multivariate or conditional,
        group=conditional,
        constant_liar=True,
        n_startup_trials=tune.startup_trials,
    )


def _gp(s: Any, tune: TuneConfig, seed: int) -> Any:
    # Optuna's GP treats running trials itself (batched expected improvement).
    return s.GPSampler(
        seed=seed, warn_independent_sampling=False, n_startup_trials=tune.startup_trials
    )


def _cmaes(s: Any, tune: TuneConfig, seed: int) -> Any:
    require("cmaes", "tune")  # CmaEsSampler needs the `cmaes` package
    return s.CmaEsSampler(
        seed=seed, warn_independent_sampling=False, n_startup_trials=tune.startup_trials
    )


# tune.method -> builder(optuna.samplers, tune, seed); `auto` resolves to one of the others
SAMPLERS: dict[str, Callable[[Any, TuneConfig, int], Any]] = {
    "auto": lambda s, tune, seed: SAMPLERS[resolve_method(tune)[0]](s, tune, seed),
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

    min: int  # the first report
    max: int  # the last report
    start: int  # the first report at which a trial may be pruned, in the same unit


def build_pruner(tune: TuneConfig, cfg: Any, n_runs: int) -> Any:
    """The pruner for `tune.pruner`, with resources in steps (one run) or runs (several);
    `tune.pruning.patience` wraps it in Optuna's PatientPruner."""
    optuna = require("optuna", "tune")
    knobs = tune.pruning
    if n_runs > 1:
        res = Resources(1, n_runs, max(1, knobs.warmup))
    else:
        every, last = cfg.train.eval_every, cfg.train.max_steps
        start = pruning_start(tune, cfg.schedule.warmup_steps, every)
        res = Resources(every, last, min(start, last))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        pruner = PRUNERS[tune.pruner](optuna.pruners, knobs, res)
        if knobs.patience and tune.pruner not in ("none", "wilcoxon"):
            pruner = optuna.pruners.PatientPruner(pruner, patience=knobs.patience)
    return pruner


def pruning_start(tune: TuneConfig, lr_warmup: int, eval_every: int) -> int:
    """The first evaluation step at which a one-run trial may be pruned: after the lr warmup
    (`pruning.warmup_steps`, by default the schedule's, the longest one the space searches),
    plus `pruning.warmup` evaluations. During warmup the loss says more about the warmup's
    length than about the configuration."""
    knobs = tune.pruning
    steps = knobs.warmup_steps
    if steps is None:
        steps = lr_warmup
        spec = tune.space.get("schedule.warmup_steps")
        if spec is not None:
            values = spec.choices if spec.type == "categorical" else [spec.high]
            steps = max(int(v) for v in values if isinstance(v, int | float))
    first_eval_after = -(-steps // eval_every) * eval_every  # round up to an evaluation
    return max(eval_every, first_eval_after + knobs.warmup * eval_every)


def _no_pruning(p: Any, knobs: PruningConfig, res: Resources) -> Any:
    return p.NopPruner()


def _median(p: Any, knobs: PruningConfig, res: Resources) -> Any:
    return p.MedianPruner(n_startup_trials=knobs.startup_trials, n_warmup_steps=res.start)


def _percentile(p: Any, knobs: PruningConfig, res: Resources) -> Any:
    # Optuna keeps the best `percentile` percent: a trial is pruned when worse than that.
    return p.PercentilePruner(
        knobs.percentile, n_startup_trials=knobs.startup_trials, n_warmup_steps=res.start
    )


def _asha(p: Any, knobs: PruningConfig, res: Resources) -> Any:
    return p.SuccessiveHalvingPruner(
        min_resource=res.start, reduction_factor=knobs.reduction_factor
    )


def _hyperband(p: Any, knobs: PruningConfig, res: Resources) -> Any:
    return p.HyperbandPruner(
        min_resource=res.start,
        max_resource=max(res.max, res.start),
        reduction_factor=knobs.reduction_factor,
    )


def _wilcoxon(p: Any, knobs: PruningConfig, res: Resources) -> Any:
    # Runs are reported one by one (step = run index, genlab.tuning.objective); the test needs
    # a few paired runs before it says anything.
    return p.WilcoxonPruner(p_threshold=knobs.p_threshold, n_startup_steps=max(2, knobs.warmup))


# tune.pruner -> builder(optuna.pruners, tune.pruning, resources)
PRUNERS: dict[str, Callable[[Any, PruningConfig, Resources], Any]] = {
    "none": _no_pruning,
    "median": _median,
    "percentile": _percentile,
    "asha": _asha,
    "hyperband": _hyperband,
    "wilcoxon": _wilcoxon,
}
