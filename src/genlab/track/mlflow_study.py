"""MLflow for a tuning study: one parent run for the study, one child run per trial.

The parent holds the study's config as params, the best value so far as a metric over trial
numbers, and at the end trials.csv, best.yaml, plots/, final/results.json and report.html.
Each trial that ended (complete, pruned or failed) becomes a child run
(tag mlflow.parentRunId): its params, its value under the study's metric, the mean and std of
its runs, each run's value, steps, duration, guard events and the failure reason. The ids live
in STUDY_DIR/mlflow.json, so re-running `genlab tune` continues the same parent and never
logs a trial twice. The trials' own training runs do not each open an MLflow run.

It runs on the background thread of track/sinks.py (`BackgroundSinks.submit`), so the
tuner never waits for MLflow.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genlab.fileio import atomic_write_text
from genlab.track.flat import flatten
from genlab.track.mlflow_sink import Target, import_mlflow, log_metrics, log_params, run_tags
from genlab.track.runs import read_json
from genlab.track.sinks import BackgroundSinks, RunEnd

if TYPE_CHECKING:
    from rich.console import Console

    from genlab.config import ExperimentConfig

RECORD = "mlflow.json"
CHILD_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def trial_records(trials: list[Any]) -> list[dict[str, Any]]:
    """Ended Optuna trials as plain data (safe to hand to another thread)."""
    out = []
    for t in trials:
        if t.state.name not in CHILD_STATUS:
            continue
        duration = t.duration.total_seconds() if t.duration is not None else None
        out.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "params": dict(t.params),
                "attrs": json.loads(json.dumps(t.user_attrs, default=str)),
                "duration_s": duration,
            }
        )
    return out


class StudySink:
    def __init__(self, cfg: ExperimentConfig, study_dir: Path, study_name: str):
        import_mlflow()
        from mlflow import MlflowClient

        from genlab.config import MlflowSection

        self.study_dir = study_dir
        self.metric = cfg.tune.metric
        self.sign = 1.0 if cfg.tune.direction == "minimize" else -1.0
        target = Target.resolve(cfg.track.mlflow or MlflowSection(), cfg.name, study_dir)
        self.client = MlflowClient(target.tracking_uri)
        record = read_json(study_dir / RECORD)
        if record.get("tracking_uri") == target.tracking_uri and record.get("run_id"):
            self.record = record
            self.client.update_run(record["run_id"], status="RUNNING")
        else:
            experiment_id = target.experiment_id(self.client)
            tags = {**run_tags(cfg.model.family, study_dir), "genlab.kind": "study"}
            parent = self.client.create_run(experiment_id, run_name=study_name, tags=tags)
            log_params(self.client, parent.info.run_id, flatten(cfg.to_dict()))
            self.record = {
                "tracking_uri": target.tracking_uri,
                "experiment": target.experiment,
                "experiment_id": experiment_id,
                "run_id": parent.info.run_id,
                "children": {},
            }
            self._save()
        self.best: float | None = self.record.get("best")

    @property
    def parent_id(self) -> str:
        return self.record["run_id"]

    def _save(self) -> None:
        atomic_write_text(self.study_dir / RECORD, json.dumps(self.record, indent=2) + "\n")

    def write_trials(self, trials: list[dict[str, Any]]) -> None:
        """A child run for each trial not logged yet."""
        from mlflow.entities import Metric

        children = self.record.setdefault("children", {})
        for t in sorted(trials, key=lambda t: t["number"]):
            if str(t["number"]) in children:
                continue
            children[str(t["number"])] = self._child(t)
            value = t["value"]
            if t["state"] == "COMPLETE" and value is not None and math.isfinite(value):
                if self.best is None or self.sign * value < self.sign * self.best:
                    self.best = value
                    self.record["best"] = value
                now = int(time.time() * 1000)
                best = Metric(f"best/{self.metric}", self.best, now, t["number"])
                log_metrics(self.client, self.parent_id, [best])
            self._save()

    def _child(self, t: dict[str, Any]) -> str:
        from mlflow.entities import Metric

        attrs = t["attrs"]
        tags = {
            "mlflow.parentRunId": self.parent_id,
            "genlab.trial": str(t["number"]),
            "genlab.state": t["state"],
        }
        if attrs.get("failure"):
            tags["genlab.failure"] = str(attrs["failure"])[:5000]
        guard = attrs.get("guard") or {}
        if guard:
            tags["genlab.guard_events"] = " ".join(f"{k}x{n}" for k, n in sorted(guard.items()))
        experiment_id = self.record["experiment_id"]
        run = self.client.create_run(experiment_id, run_name=f"trial-{t['number']}", tags=tags)
        run_id = run.info.run_id
        log_params(self.client, run_id, t["params"])
        numbers: dict[str, Any] = {
            self.metric: t["value"],
            "trial/mean": attrs.get("mean"),
            "trial/std": attrs.get("std"),
            "trial/steps": attrs.get("steps"),
            "trial/duration_s": t["duration_s"],
        }
        for name, value in (attrs.get("values") or {}).items():
            numbers[f"trial/value/{name}"] = value
        now = int(time.time() * 1000)
        metrics = [
            Metric(k, float(v), now, 0)
            for k, v in numbers.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        log_metrics(self.client, run_id, metrics)
        self.client.set_terminated(run_id, status=CHILD_STATUS[t["state"]])
        return run_id

    def flush(self) -> None:
        pass

    def close(self, end: RunEnd) -> None:
        """The study's files as the parent's artifacts; the parent ends with the study."""
        for name in ("trials.csv", "best.yaml", "report.html"):
            path = self.study_dir / name
            if path.is_file():
                self.client.log_artifact(self.parent_id, str(path))
        results = self.study_dir / "final" / "results.json"
        if results.is_file():
            self.client.log_artifact(self.parent_id, str(results), "final")
        plots = self.study_dir / "plots"
        if plots.is_dir() and any(plots.iterdir()):
            self.client.log_artifacts(self.parent_id, str(plots), "plots")
        self.client.set_tag(self.parent_id, "genlab.status", end.status)
        status = "FINISHED" if end.status == "finished" else "FAILED"
        self.client.set_terminated(self.parent_id, status=status)


class StudyTracking:
    """What the tuner holds: `trials(...)` after trials end, `close(end)` at the end. Does
    nothing when the config has no `track.mlflow`."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        study_dir: Path,
        study_name: str,
        console: Console | None = None,
    ):
        self._sinks: BackgroundSinks | None = None
        self._logged: set[int] = set()
        if cfg.track.mlflow is None:
            return

        def warn(message: str) -> None:
            if console is not None:
                console.print(f"[yellow]track[/]: {message}")

        opener = {"mlflow": lambda: StudySink(cfg, study_dir, study_name)}
        self._sinks = BackgroundSinks(opener, warn)

    def trials(self, trials: list[Any]) -> None:
        if self._sinks is None:
            return
        ended = trial_records([t for t in trials if t.number not in self._logged])
        if ended:
            self._logged.update(t["number"] for t in ended)
            self._sinks.submit("write_trials", ended)

    def close(self, end: RunEnd) -> None:
        if self._sinks is not None:
            self._sinks.close(end)
            self._sinks = None
