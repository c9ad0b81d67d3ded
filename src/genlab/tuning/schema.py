"""The `tune:` config section (owned by the tuner; genlab.config embeds it).

This module must not import genlab.config (genlab.config imports it). Checks that need the rest
of the config (does a space key exist? is a value in range for it?) live in genlab.tuning.space
and run before the first trial. Messages follow config.py: key, value received, fix.

Example:

    tune:
      method: auto              # gp here? no: a categorical param makes it tpe
      n_trials: 40
      metric: val/loss
      space:
        optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
        optim.name: {type: categorical, choices: [adamw, sgd]}
        optim.momentum: {type: float, low: 0.5, high: 0.99, when: {optim.name: sgd}}
      pruner: median
      cv: {folds: 3}
      final: {top_k: 3, seeds: 3}
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scalar = str | bool | int | float | None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ParamSpec(_Section):
    """One searched config key: a float/int range or a set of choices, maybe conditional."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: list[Scalar] | None = None
    # Only searched when every listed key has the given value (or one of a list of values).
    # A key may be another searched key or any key of the base config.
    when: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpec:
        if self.type == "categorical":
            self._check_categorical()
        else:
            self._check_range()
        return self

    def _check_categorical(self) -> None:
        if not self.choices:
            raise ValueError(
                f"categorical needs a non-empty `choices` list, got {self.choices!r}; "
                "write e.g. choices: [adamw, sgd]"
            )
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise ValueError(f"choices has duplicates, got {self.choices!r}; list each once")
        extra = [k for k in ("low", "high", "step") if getattr(self, k) is not None]
        if extra or self.log:
            keys = extra + (["log"] if self.log else [])
            raise ValueError(
                f"categorical takes only `choices`, got {', '.join(keys)}; remove them or use "
                "type: float / int for a range"
            )

    def _check_range(self) -> None:
        t = self.type
        if self.low is None or self.high is None:
            raise ValueError(
                f"type {t} needs `low` and `high`, got low={self.low!r}, high={self.high!r}; "
                "write e.g. {type: " + t + ", low: 1, high: 10}"
            )
        if self.choices is not None:
            raise ValueError(
                f"type {t} takes low/high, not choices (got {self.choices!r}); use "
                "type: categorical for a list of values"
            )
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(
                f"low and high must be finite, got low={self.low!r}, high={self.high!r}; "
                "use finite bounds"
            )
        if self.low > self.high:
            raise ValueError(
                f"`low <= high` must hold, got low={self.low!r}, high={self.high!r}; swap them"
            )
        if self.log and self.low <= 0:
            raise ValueError(
                f"log: true needs low > 0, got low={self.low!r}; use a positive low such as "
                f"{self.high / 1000 if self.high > 0 else 1e-5:g}, or log: false"
            )
        if self.log and self.step is not None:
            raise ValueError(
                f"log: true and step={self.step!r} cannot be combined; drop one of them"
            )
        if t == "int":
            bad = [
                f"{k}={v!r}"
                for k, v in (("low", self.low), ("high", self.high), ("step", self.step))
                if v is not None and float(v) != int(v)
            ]
            if bad:
                raise ValueError(
                    f"type int needs whole numbers, got {', '.join(bad)}; round them, or use "
                    "type: float"
                )


class CVConfig(_Section):
    """K-fold cross-validation over whole train documents (the data layer cuts the folds)."""

    folds: int = Field(0, ge=0, description="0: off (use the held-out val split); else >= 2")
    kind: Literal["kfold", "stratified"] = "kfold"

    @model_validator(mode="after")
    def _folds(self) -> CVConfig:
        if self.folds == 1:
            raise ValueError("folds must be 0 (off) or >= 2, got 1; use e.g. folds: 3")
        return self


class PruningConfig(_Section):
    """Knobs shared by the pruners. Resources are training steps for a trial with one training
    run, and finished runs (folds x seeds) when a trial has several."""

    startup_trials: int = Field(5, ge=0, description="trials that finish before any pruning")
    warmup_steps: int | None = Field(
        None,
        ge=0,
        description="steps no trial is pruned in (one run per trial); default: the lr warmup "
        "(schedule.warmup_steps, its highest value when searched), when a loss says little",
    )
    warmup: int = Field(
        0, ge=0, description="evaluations after warmup_steps (or runs) before a trial is pruned"
    )
    percentile: float = Field(
        25.0, gt=0, lt=100, description="percentile: keep trials in the best this many percent"
    )
    patience: int = Field(
        0,
        ge=0,
        description="evaluations a trial may go without improving before the pruner may stop "
        "it (0: off); for noisy curves, wraps median / percentile / asha / hyperband",
    )
    p_threshold: float = Field(
        0.1, gt=0, lt=1, description="wilcoxon: prune when p < this (worse than the best)"
    )
    reduction_factor: int = Field(3, ge=2, description="asha / hyperband")


class FinalConfig(_Section):
    """Re-run the top-k configs on fresh seeds and pick the winner by the mean."""

    top_k: int = Field(0, ge=0, description="0: off")
    seeds: int = Field(3, ge=1)


class TuneConfig(_Section):
    """Hyperparameter search over any config keys; see the module docstring for an example."""

    space: dict[str, ParamSpec] = Field(default_factory=dict)
    method: Literal["auto", "grid", "random", "qmc", "tpe", "gp", "cmaes"] = Field(
        "auto",
        description="auto: gp for a space of numeric params without conditions and at most "
        "200 trials, else tpe (genlab.tuning.samplers.resolve_method; benchmarks/tuning.py)",
    )
    n_trials: int | None = Field(None, gt=0, description="trials to finish (grid: all points)")
    timeout: float | None = Field(None, gt=0, description="seconds per `genlab tune` call")
    metric: str = "val/loss"
    direction: Literal["minimize", "maximize"] = "minimize"
    pruner: Literal["none", "median", "percentile", "asha", "hyperband", "wilcoxon"] = "none"
    pruning: PruningConfig = Field(default_factory=PruningConfig)
    cv: CVConfig = Field(default_factory=CVConfig)
    seeds: int = Field(1, ge=1, description="training seeds per trial (and per fold)")
    objective: Literal["mean", "mean_plus_kstd"] = "mean"
    k: float = Field(1.0, ge=0, description="mean_plus_kstd: penalty on the spread")
    final: FinalConfig = Field(default_factory=FinalConfig)
    startup_trials: int = Field(
        5, ge=0, description="random trials before tpe / gp / cmaes fit their model"
    )
    multivariate: bool = Field(
        False,
        description="tpe: model the params jointly rather than one by one (on by itself for "
        "conditional spaces); one by one is more robust when the objective is noisy",
    )
    seed: int | None = Field(None, description="sampler seed (default: the experiment seed)")
    storage: str | None = Field(None, description="database URL (default: a file in the study dir)")
    study_name: str | None = Field(None, description="default: the experiment name")
    max_retry: int = Field(2, ge=0, description="re-runs of a trial whose worker died")
    heartbeat: int = Field(
        20,
        ge=1,
        description="seconds between a running trial's heartbeats in a database storage; a "
        "trial silent for 3 beats (its worker died) is failed and re-queued",
    )
    keep_checkpoints: bool = Field(False, description="keep each trial run's checkpoints/")

    @model_validator(mode="after")
    def _metric(self) -> TuneConfig:
        # cv.kind 'stratified' needs labels: checked with the task (genlab.task_rules).
        if "/" not in self.metric:
            raise ValueError(
                f"metric must name a logged metric such as 'val/loss', got {self.metric!r}; "
                "use val/loss, val/perplexity or val/bits_per_byte"
            )
        if self.pruner == "wilcoxon" and self.cv.folds < 2 and self.seeds < 2:
            raise ValueError(
                "pruner 'wilcoxon' compares a trial with the best one run by run, so a trial "
                f"needs several runs, got cv.folds={self.cv.folds} and seeds={self.seeds}; set "
                "cv.folds: 3 (or seeds: 3), or use pruner: median"
            )
        return self
