"""One trial: sample params, train every run (CV fold x seed), aggregate, prune, record.

A trial's runs live in `<study_dir>/trials/<number>/<fold>-seed<S>/` (config.yaml, metrics,
events; checkpoints are removed afterwards unless tune.keep_checkpoints). Everything a report
needs goes into the trial's user attrs, so trials.csv can be written from the storage alone:
`values` (run name -> metric), `steps` (training steps actually run), `guard` (event kinds ->
count), `failure` (why a trial failed), `error_file` (the traceback of a bug, see
genlab.tuning.bugs), `mean`/`std` of the runs.
"""

from __future__ import annotations

import math
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from genlab import config as config_mod
from genlab.errors import ConfigError, GuardAbort, require
from genlab.track.logs import read_jsonl
from genlab.tuning.bugs import ERROR_FILE, is_bug, write_traceback
from genlab.tuning.schema import TuneConfig
from genlab.tuning.space import SearchSpace
from genlab.tuning.storage import INTERRUPTED


class TrialFailed(Exception):
    """A trial that cannot produce a value; the study records it as failed and goes on."""


@dataclass(frozen=True)
class RunSpec:
    """One training run of a trial: a CV fold (or None: the held-out val split) and a seed."""

    fold: int | None
    seed: int

    @property
    def name(self) -> str:
        return f"{'all' if self.fold is None else f'fold{self.fold}'}-seed{self.seed}"


def trial_runs(tune: TuneConfig, base_seed: int) -> list[RunSpec]:
    """Fold-major, the same list for every trial, so run u always means the same data."""
    folds: list[int | None] = list(range(tune.cv.folds)) if tune.cv.folds else [None]
    seeds = [base_seed + i for i in range(tune.seeds)]
    return [RunSpec(f, s) for f in folds for s in seeds]


def run_config(
    space: SearchSpace, params: dict[str, Any], run: RunSpec, cv_folds: int
) -> config_mod.ExperimentConfig:
    """The config of one training run: base + params + seed (+ fold); quiet, no tune section.
    MLflow sees the study as one parent run with a child per trial (track/mlflow_study.py),
    so a trial's training runs do not open MLflow runs of their own."""
    fixed: dict[str, Any] = {"seed": run.seed, "train.progress": False, "track.mlflow": None}
    if run.fold is not None:
        fixed.update({"data.cv_folds": cv_folds, "data.cv_fold": run.fold})
    raw = space.apply(params, **fixed)
    raw.pop("tune", None)
    return config_mod.from_dict(raw, origin="trial params")


def aggregate(values: list[float], tune: TuneConfig) -> float:
    """The trial's objective: the mean, or mean + k*std on the pessimistic side."""
    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean())
    if tune.objective == "mean" or len(arr) < 2:
        return mean
    sign = 1.0 if tune.direction == "minimize" else -1.0
    return mean + sign * tune.k * float(arr.std(ddof=1))


class Objective:
    """Callable for `study.optimize`. Raises TrialFailed (caught by optimize) for a trial that
    failed (a bug too, after writing its traceback: the runner's stop rule counts them),
    optuna.TrialPruned when pruned, and ConfigError when no trial could ever succeed."""

    def __init__(self, space: SearchSpace, tune: TuneConfig, base_seed: int, study_dir: Path):
        self.optuna = require("optuna", "tune")
        self.space = space
        self.tune = tune
        self.runs = trial_runs(tune, base_seed)
        self.study_dir = study_dir
        self.quiet = Console(quiet=True)

    def __call__(self, trial: Any) -> float:
        try:
            return self._run_trial(trial)
        except (TrialFailed, self.optuna.TrialPruned):
            raise
        except Exception as exc:
            if not is_bug(exc):  # e.g. ConfigError: no trial could succeed; stop the study
                raise
            return self._bug(trial, "trial", exc)

    def _run_trial(self, trial: Any) -> float:
        from genlab.training.loop import train

        tune = self.tune
        params = self.space.suggest(trial)
        try:
            configs = [run_config(self.space, params, r, tune.cv.folds) for r in self.runs]
        except ConfigError as exc:
            return self._fail(trial, f"invalid parameter combination: {exc}")
        values: dict[str, float] = {}
        steps = 0
        guard: Counter[str] = Counter()
        trial_dir = self.study_dir / "trials" / f"{trial.number:04d}"
        try:
            for u, (run, cfg) in enumerate(zip(self.runs, configs)):
                run_dir = trial_dir / run.name
                hook = _EvalHook(trial, tune.metric, len(self.runs) == 1, cfg.train.max_steps)
                try:
                    result = train(cfg, run_dir, overwrite=True, console=self.quiet, on_eval=hook)
                    steps += result.step
                except self.optuna.TrialPruned:
                    steps += hook.last_step
                    raise
                except GuardAbort:
                    steps += _last_logged_step(run_dir)
                    return self._fail(trial, f"{run.name}: {abort_reason(run_dir)}")
                except KeyboardInterrupt:
                    trial.set_user_attr(INTERRUPTED, True)
                    trial.set_user_attr("failure", "interrupted (Ctrl-C); re-run to retry it")
                    raise
                except Exception as exc:
                    steps += _last_logged_step(run_dir)
                    if is_bug(exc):
                        return self._bug(trial, run.name, exc)
                    # A user error for these params (bad data for a fold, ...) or out of memory.
                    return self._fail(trial, f"{run.name}: {one_line(exc)}")
                finally:
                    guard.update(_event_kinds(run_dir))
                    self._tidy(run_dir)
                value = result.final_metrics.get(tune.metric)
                if value is None:
                    known = ", ".join(sorted(result.final_metrics)) or "none"
                    raise ConfigError(
                        f"tune.metric {tune.metric!r} is not among the run's final metrics "
                        f"({known}); set tune.metric to one of them"
                    )
                if not math.isfinite(value):
                    return self._fail(trial, f"{run.name}: {tune.metric} is {value}")
                values[run.name] = float(value)
                trial.set_user_attr("values", values)
                last = u == len(self.runs) - 1
                if len(self.runs) > 1 and tune.pruner != "none":
                    # Every trial's run u is the same fold/seed. Wilcoxon pairs run u with the
                    # best trial's run u (step u, every run); the others see "runs 0..u done"
                    # (step u+1, until the last).
                    if tune.pruner == "wilcoxon":
                        trial.report(float(value), step=u)
                    elif not last:
                        trial.report(float(np.mean(list(values.values()))), step=u + 1)
                    if not last and trial.should_prune():
                        raise self.optuna.TrialPruned()
        finally:
            trial.set_user_attr("steps", steps)
            trial.set_user_attr("guard", dict(guard))
        vals = list(values.values())
        trial.set_user_attr("mean", float(np.mean(vals)))
        trial.set_user_attr("std", float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0)
        return aggregate(vals, tune)

    def _fail(self, trial: Any, reason: str) -> float:
        trial.set_user_attr("failure", reason)
        raise TrialFailed(reason)

    def _bug(self, trial: Any, where: str, exc: BaseException) -> float:
        """Record genlab's own failure: the traceback file, named in the trial's attrs."""
        context = f"trial {trial.number} ({where}) with params {trial.params}"
        relative = write_traceback(self.study_dir, f"trial-{trial.number:04d}", exc, context)
        trial.set_user_attr(ERROR_FILE, relative)
        return self._fail(trial, f"{where}: bug: {one_line(exc)}; traceback in {relative}")

    def _tidy(self, run_dir: Path) -> None:
        if not self.tune.keep_checkpoints:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)


class _EvalHook:
    """on_eval for train(): remembers the step, and (single-run trials) feeds the pruner. The
    last evaluation is reported but never pruned: the run is over, pruning would only throw
    its value away."""

    def __init__(self, trial: Any, metric: str, report: bool, last_step: int):
        self.trial, self.metric, self.report = trial, metric, report
        self.last_step = 0
        self.final_step = last_step

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        self.last_step = step
        if not self.report or self.metric not in metrics:
            return
        self.trial.report(float(metrics[self.metric]), step=step)
        if step < self.final_step and self.trial.should_prune():
            import optuna

            raise optuna.TrialPruned()


def _event_kinds(run_dir: Path) -> Counter[str]:
    return Counter(str(e.get("kind")) for e in read_jsonl(run_dir / "events.jsonl"))


def _last_logged_step(run_dir: Path) -> int:
    records = read_jsonl(run_dir / "metrics.jsonl")
    return int(records[-1].get("step", 0)) if records else 0


def abort_reason(run_dir: Path) -> str:
    """`guard abort at step N: <kind>` from the run's events (the diagnosis is in the run dir)."""
    events = read_jsonl(run_dir / "events.jsonl")
    aborts = [e for e in events if e.get("action") == "abort"] or events[-1:]
    if not aborts:
        return "guard abort (no event logged)"
    e = aborts[-1]
    return f"guard abort at step {e.get('step')}: {e.get('kind')} ({len(events)} guard events)"


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
