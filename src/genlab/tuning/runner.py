"""`run_study`: validate, open (or resume) the study, run the trials, write the outputs.

Flow: load the config → check the space against it (ConfigError before any trial) → check the
data once → lock the study dir → open/resume the study → check its fixed settings are the ones
it was created with (genlab.tuning.fixed) → re-queue orphaned trials → enqueue
missing grid points → run the remaining trials (in this process, or N worker processes) →
trials.csv → final stage → best.yaml, plots.

Bugs: a trial that fails on genlab's own exception (genlab.tuning.bugs) writes its traceback
under `errors/`; at the study's second bug every process stops after its current trial, and
`run_study` raises StudyBug (exit code 1) once trials.csv is written.

Trial budget: `tune.n_trials` counts trials that ran to an end (complete, pruned or failed).
It lives in the shared storage as a queue of slots (genlab.tuning.queue): every process fills
the missing slots and its workers only claim queued trials (genlab.tuning.worker), so the study
runs exactly n_trials, and each grid point exactly once, whether one process runs it or several
`genlab tune` processes on several machines share a database (`tune.storage`).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from genlab import config as config_mod
from genlab.errors import ConfigError, GenlabError, require
from genlab.track.console import make_console
from genlab.track.finish import write_report_safely
from genlab.track.mlflow_study import StudyTracking
from genlab.track.sinks import RunEnd, check_sinks
from genlab.tuning import report
from genlab.tuning.bugs import (
    StudyBug,
    final_bug_files,
    search_bug_files,
    search_should_stop,
    stop_message,
)
from genlab.tuning.final import FinalRow, pick_winner, run_final
from genlab.tuning.fixed import check_fixed, fixed_settings
from genlab.tuning.noise import NoiseCheck, check_noise
from genlab.tuning.objective import Objective, run_config, trial_runs
from genlab.tuning.queue import budget_slots, fill_budget, fill_grid, grid_slots, live
from genlab.tuning.samplers import build_pruner, build_sampler, resolve_method, trial_seed
from genlab.tuning.space import SearchSpace, build_space
from genlab.tuning.storage import (
    StudyLock,
    WorkerLock,
    check_study_dir,
    open_storage,
    prepare_study_dir,
    recover_orphans,
    retried_numbers,
    storage_error,
    storage_spec,
)
from genlab.tuning.worker import die_with_parent, run_trials


@dataclass
class StudyResult:
    """What a study produced; `genlab.tuning.print_summary(result)` prints it."""

    study_dir: Path
    study_name: str
    metric: str
    direction: str
    param_keys: list[str]
    n_complete: int
    n_pruned: int
    n_failed: int
    steps_trained: int
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, Any]
    best_config: Path | None
    trials_csv: Path
    plots: list[Path]
    skipped_plots: list[str]
    failures: list[tuple[int, str]]
    top: list[dict[str, Any]] = field(default_factory=list)
    final: list[FinalRow] = field(default_factory=list)
    winner: FinalRow | None = None
    noise: NoiseCheck | None = None  # is the signal stronger than the run-to-run noise?
    sampler: str = ""  # e.g. "gp (auto: 4 numeric params, 30 trials)"


@dataclass(frozen=True)
class _Setup:
    """Everything a worker needs, rebuilt identically in each process from plain data."""

    config_path: str | None
    overrides: list[str]
    study_dir: str
    storage: dict[str, str]
    study_name: str
    started: datetime  # when this `genlab tune` call began: its bugs stop the study
    parent_pid: int  # the `genlab tune` process: its worker processes die with it
    sampler: str = ""  # the sampler and why, e.g. "gp (auto: 4 numeric params, 30 trials)"


def run_study(
    config_path: Path | None,
    overrides: list[str],
    study_dir: Path | None = None,
    workers: int = 1,
    console: Console | None = None,
) -> StudyResult:
    """Run (or resume) the hyperparameter search described by the config's `tune:` section."""
    console = console or make_console(stderr=True)
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}; use e.g. --workers 2")
    cfg, tune, space = _load(config_path, overrides)
    _check_budget(tune)
    check_sinks(cfg.track)  # a tracking tool that is not installed: exit 2 before any trial
    optuna = require("optuna", "tune")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_dir = Path(study_dir) if study_dir is not None else Path("studies") / cfg.name
    # The cheap checks first, then the data (preparing it takes a while): bad data or too few
    # examples for the folds is a user error before the study dir is created.
    storage = storage_spec(tune.storage, study_dir, workers)  # a bad URL or missing driver
    # `auto` is decided once, here, and every worker runs what it decided (an override).
    method, why = resolve_method(tune, parallel=workers > 1 or storage["local"] != "yes")
    if tune.method == "auto":
        console.print(f"sampler: {method} ({why})")
        overrides = [*overrides, f"tune.method={method}"]
        cfg, tune, space = _load(config_path, overrides)
    build_sampler(tune, 0)  # a missing optional package (cmaes) fails here, before any trial
    check_study_dir(study_dir)
    _check_data(space, cfg)
    prepare_study_dir(study_dir)
    setup = _Setup(
        None if config_path is None else str(config_path),
        list(overrides),
        str(study_dir),
        storage,
        tune.study_name or cfg.name,
        datetime.now(),  # optuna stamps trials with naive local time too
        os.getpid(),
        f"{method} ({why})",
    )
    with StudyLock(study_dir):
        WorkerLock(study_dir).wait_for_old_workers()
        study, storage = _open_study(setup, tune, cfg)
        check_fixed(study, fixed_settings(cfg.to_dict(), space.keys), _where(setup))
        with warnings.catch_warnings():  # experimental in Optuna 3.2+, stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([tune.metric])  # reports and Optuna's plots name the axis
        tracking = StudyTracking(cfg, study_dir, setup.study_name, console)
        try:
            result = _search(setup, study, storage, space, tune, cfg, workers, tracking, console)
        except BaseException as exc:
            tracking.close(RunEnd.after(exc))
            raise
        tracking.trials(study.get_trials(deepcopy=False))  # any the progress did not see
        if cfg.track.report:
            write_report_safely(study_dir, console)
        tracking.close(RunEnd("finished"))
        return result


def _search(
    setup: _Setup,
    study: Any,
    storage: Any,
    space: SearchSpace,
    tune: Any,
    cfg: Any,
    workers: int,
    tracking: StudyTracking,
    console: Console,
) -> StudyResult:
    """Re-queue orphans, fill the queue of slots, run the trials, then the final stage and
    outputs."""
    study_dir = Path(setup.study_dir)
    if setup.storage["local"] == "yes":
        requeued = recover_orphans(study, tune.max_retry)
        if requeued:
            console.print(f"re-queued trials left unfinished last time: {requeued}")
    if tune.method == "grid":
        points = space.grid()
        fill_grid(study, points)
        total: int | None = len(points)
    else:
        total = tune.n_trials
        if total is not None:
            fill_budget(study, total)
    _run_trials(setup, study, storage, total, workers, console, tracking)
    bug_files = search_should_stop(study, setup.started, _final_bug_files(study_dir))
    if bug_files:
        report.write_trials_csv(study, study_dir / "trials.csv", space.keys)
        raise StudyBug(stop_message(study_dir, bug_files))
    return _finish(study, space, tune, cfg, study_dir, console, setup.sampler)


# -- setup ----------------------------------------------------------------------------------


def _load(config_path: Path | None, overrides: list[str]) -> tuple[Any, Any, SearchSpace]:
    cfg = config_mod.load(config_path, overrides)
    space = build_space(cfg.tune, cfg.to_dict())
    return cfg, cfg.tune, space


def _check_budget(tune: Any) -> None:
    if tune.method != "grid" and tune.n_trials is None and tune.timeout is None:
        raise ConfigError(
            f"tune.method {tune.method!r} needs a budget, got neither tune.n_trials nor "
            "tune.timeout; set e.g. tune.n_trials=30"
        )


def _check_data(space: SearchSpace, cfg: Any) -> None:
    """Build the first run's data once, so a bad source or too few documents for the folds
    is one clean error instead of N failed trials."""
    from genlab.data.lm import build_lm_data

    run = trial_runs(cfg.tune, cfg.seed)[0]
    first = run_config(space, {}, run, cfg.tune.cv.folds)
    if first.task == "classify":  # labels, classes and folds checked as training will
        from genlab.training.classify_task import check_classify_data

        check_classify_data(first)
        return
    build_lm_data(first.data, run.seed)


def _open_study(setup: _Setup, tune: Any, cfg: Any) -> tuple[Any, Any]:
    """The study (created if new) and the storage it lives in."""
    optuna = require("optuna", "tune")
    sa = require("sqlalchemy", "tune")
    storage = open_storage(setup.storage, tune.max_retry, tune.heartbeat)
    try:
        probe = optuna.create_study(
            study_name=setup.study_name,
            storage=storage,
            direction=tune.direction,
            load_if_exists=True,
        )
    except sa.exc.DBAPIError as exc:
        raise storage_error(setup.storage, exc) from None
    if probe.direction.name.lower() != tune.direction:
        raise ConfigError(
            f"study {setup.study_name!r} in {_where(setup)} was created to "
            f"{probe.direction.name.lower()}, got tune.direction={tune.direction!r}; use the "
            "same direction or another study (--study-dir, tune.study_name)"
        )
    runs = trial_runs(tune, cfg.seed)
    pruner = build_pruner(tune, cfg, len(runs))
    # The sampler is rebuilt for each trial from its number (genlab.tuning.worker).
    study = optuna.load_study(
        study_name=setup.study_name,
        storage=storage,
        sampler=build_sampler(tune, _sampler_seed(tune, cfg)),
        pruner=pruner,
    )
    return study, storage


def _where(setup: _Setup) -> str:
    return setup.study_dir if setup.storage["local"] == "yes" else "tune.storage"


def _sampler_seed(tune: Any, cfg: Any) -> int:
    return tune.seed if tune.seed is not None else cfg.seed


# -- running --------------------------------------------------------------------------------


def _run_trials(
    setup: _Setup,
    study: Any,
    storage: Any,
    total: int | None,
    workers: int,
    console: Console,
    tracking: StudyTracking,
) -> None:
    with _TrialProgress(study, total, console, tracking.trials) as progress:
        if workers == 1:
            _optimize(setup, study, storage, callback=progress.callback)
            return
        ctx = mp.get_context("spawn")  # fresh interpreters: no forked torch/optuna state
        procs = [
            ctx.Process(target=_worker_main, args=(setup, i, workers), daemon=False)
            for i in range(workers)
        ]
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            progress.poll()
            time.sleep(0.5)
        progress.poll()
        bad = [p.exitcode for p in procs if p.exitcode != 0]
        if bad:
            errors = sorted(Path(setup.study_dir).glob("worker-*.error"))
            if not errors:  # not a user error: the worker's traceback is on stderr above
                raise StudyBug(
                    f"a tuning worker stopped unexpectedly (exit codes {bad}); its traceback, if "
                    "any, is above; the same command resumes the study"
                )
            detail = errors[0].read_text().strip()
            for e in errors:
                e.unlink()
            raise GenlabError(f"a tuning worker stopped: {detail}")


def _optimize(setup: _Setup, study: Any, storage: Any, callback: Any = None) -> None:
    cfg = config_mod.load(setup.config_path, setup.overrides)
    tune = cfg.tune
    space = build_space(tune, cfg.to_dict())
    objective = Objective(space, tune, cfg.seed, Path(setup.study_dir))
    final_files = _final_bug_files(Path(setup.study_dir))
    seed = _sampler_seed(tune, cfg)

    def stop_on_bugs(study: Any, trial: Any) -> bool:
        # Every process asks the shared storage, so a bug in any worker counts for all.
        return bool(search_should_stop(study, setup.started, final_files))

    if tune.method == "grid":
        accept = grid_slots(space.grid())
    elif tune.n_trials is not None:
        accept = budget_slots(tune.n_trials)
    else:
        accept = lambda slot: True  # noqa: E731  (tune.timeout only: every slot)
    run_trials(
        study,
        storage,
        objective,
        lambda number: build_sampler(tune, trial_seed(tune, seed, number)),
        accept=accept,
        open_ended=tune.method != "grid" and tune.n_trials is None,
        timeout=tune.timeout,
        callbacks=[stop_on_bugs, *([callback] if callback else [])],
    )


def _final_bug_files(study_dir: Path) -> list[str]:
    """Bugs of an earlier call's final stage (they count towards the study's bugs)."""
    store = study_dir / "final" / "results.json"
    return final_bug_files(json.loads(store.read_text())) if store.is_file() else []


def _worker_main(setup: _Setup, index: int, workers: int) -> None:
    """A worker process: its own study handle on the shared storage, a share of the cores."""
    import sys

    from genlab.threads import available_cpus, use_threads

    die_with_parent(setup.parent_pid)
    # N workers each using every core would thrash; give each an equal share.
    use_threads(max(1, available_cpus() // workers))
    try:
        with WorkerLock(Path(setup.study_dir)).hold():
            optuna = require("optuna", "tune")
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            cfg = config_mod.load(setup.config_path, setup.overrides)
            study, storage = _open_study(setup, cfg.tune, cfg)
            _optimize(setup, study, storage)
    except GenlabError as exc:
        Path(setup.study_dir, f"worker-{index}.error").write_text(str(exc))
        sys.exit(2)


class _TrialProgress:
    """A rich progress bar over trials (finished / total), fed by a callback or by polling."""

    def __init__(self, study: Any, total: int | None, console: Console, on_trials: Any = None):
        self.study = study
        self.on_trials = on_trials  # gets the ended trials at each poll (MLflow children)
        self.progress = Progress(
            TextColumn("[bold blue]tune"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[best]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        self.task = self.progress.add_task("tune", total=total, best="")
        # Not on a terminal (CI, a log file) the bar is off: one line per finished trial
        # instead, so a long study is never silent for minutes.
        self.console, self.total, self.reported = console, total, None
        self.started = time.perf_counter()

    def __enter__(self) -> _TrialProgress:
        self.progress.__enter__()
        self.poll()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def callback(self, study: Any, trial: Any) -> None:
        self.poll()

    def poll(self) -> None:
        optuna = require("optuna", "tune")
        S = optuna.trial.TrialState
        trials = [t for t in live(self.study.get_trials(deepcopy=False)) if t.state.is_finished()]
        if self.on_trials is not None:
            self.on_trials(trials)
        done = len(trials)
        best = [t.value for t in trials if t.state == S.COMPLETE and t.value is not None]
        if best:
            pick = min(best) if self.study.direction.name == "MINIMIZE" else max(best)
            text = f"best {pick:.4g}"
        else:
            text = ""
        self.progress.update(self.task, completed=done, best=text)
        if not self.console.is_terminal and done != self.reported:
            if self.reported is not None:  # the count at the start is no news
                minutes = (time.perf_counter() - self.started) / 60
                of = f"/{self.total}" if self.total else ""
                best_text = f", {text}" if text else ""
                self.console.print(
                    f"tune: {done}{of} trials finished{best_text} ({minutes:.1f} min)",
                    highlight=False,
                )
            self.reported = done


# -- outputs --------------------------------------------------------------------------------


def _finish(
    study: Any,
    space: SearchSpace,
    tune: Any,
    cfg: Any,
    study_dir: Path,
    console: Console,
    sampler: str,
) -> StudyResult:
    optuna = require("optuna", "tune")
    S = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == S.COMPLETE and t.value is not None]
    sign = 1.0 if tune.direction == "minimize" else -1.0
    complete.sort(key=lambda t: sign * t.value)
    retried = retried_numbers(study)
    failed = [t for t in trials if t.state == S.FAIL and t.number not in retried]
    csv_path = study_dir / "trials.csv"
    report.write_trials_csv(study, csv_path, space.keys)  # first: the final stage may stop
    rows: list[FinalRow] = []
    winner = None
    if tune.final.top_k and complete:
        bugs = search_bug_files(study)
        rows = run_final(complete, space, tune, cfg.seed, study_dir, console, bugs)
        winner = pick_winner(rows, tune.direction)
    best_trial, best_value, best_params, best_config = None, None, {}, None
    if complete:
        pick = next(t for t in complete if t.number == winner.trial) if winner else complete[0]
        best_trial, best_value, best_params = pick.number, pick.value, dict(pick.params)
        if winner is not None:
            best_value = winner.mean
        best_config = study_dir / "best.yaml"
        # Trials ran without a progress bar (the objective turns it off); a user's run has one.
        progress = config_mod.TrainConfig.model_fields["progress"].default
        raw = space.apply(best_params, name=f"{cfg.name}-best", **{"train.progress": progress})
        header = (
            f"genlab tune: best of study {study.study_name!r} (trial {best_trial}, "
            f"{tune.metric} {best_value:.6g}{' on fresh seeds' if winner else ''}).\n"
            f"params: {best_params}\nrun it with: genlab train {best_config}\n"
            + report.best_yaml_expectation(pick, winner, cfg.seed, tune.metric)
        )
        report.write_best_yaml(raw, best_config, header)
    plots, skipped = report.write_plots(
        study, study_dir / "plots", tune.metric, winner.trial if winner else None
    )
    steps = sum(int(t.user_attrs.get("steps", 0)) for t in trials)
    return StudyResult(
        study_dir=study_dir,
        study_name=study.study_name,
        metric=tune.metric,
        direction=tune.direction,
        param_keys=space.keys,
        n_complete=len(complete),
        n_pruned=sum(1 for t in trials if t.state == S.PRUNED),
        n_failed=len(failed),
        steps_trained=steps,
        best_trial=best_trial,
        best_value=best_value,
        best_params=best_params,
        best_config=best_config,
        trials_csv=csv_path,
        plots=plots,
        skipped_plots=skipped,
        failures=[(t.number, str(t.user_attrs.get("failure", "unknown"))) for t in failed],
        top=[
            {
                "number": t.number,
                "value": t.value,
                "params": t.params,
                "steps": t.user_attrs.get("steps", ""),
            }
            for t in complete
        ],
        final=rows,
        winner=winner,
        noise=check_noise(complete, rows, tune.direction) if complete else None,
        sampler=sampler,
    )
