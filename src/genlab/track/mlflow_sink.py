"""MLflow: one MLflow run per genlab run (`track.mlflow: {tracking_uri, experiment}`).

- params: the flattened resolved config; tags: family, genlab version, genlab's git commit
  (when genlab runs from a checkout), the run directory, the end status;
- metrics: every metrics.jsonl number with its step, sent in batches from the background
  thread (sinks.py);
- artifacts: samples as they are written; config.yaml, metrics.json, events.jsonl,
  diagnosis.txt and plots/ at the end; report.html after the command (finish.py).

Nothing goes to the network unless `tracking_uri` names a server: the default store is the
SQLite file `mlflow.db` next to the run directory (artifacts in `mlartifacts/` beside it), and
MLflow's usage telemetry is off unless MLFLOW_DISABLE_TELEMETRY says otherwise. The run id is
kept in RUN_DIR/mlflow.json, so `genlab resume` continues the same MLflow run (steps it had
already logged before a crash are not logged twice) and `genlab eval` adds to it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genlab import __version__
from genlab.errors import require
from genlab.fileio import atomic_write_text
from genlab.track.flat import as_text, flatten
from genlab.track.runs import read_json
from genlab.track.sinks import RunEnd, scalars

if TYPE_CHECKING:
    from genlab.config import ExperimentConfig, MlflowSection
    from genlab.track.rundir import RunDir

BATCH = 1000  # MLflow's limit of metrics per log_batch call
PARAM_BATCH = 100  # ... and of params
PARAM_CHARS = 6000  # ... and of characters per param value
FLUSH_EVERY_S = 10.0  # a slow run's metrics still reach MLflow this often
END_STATUS = {"finished": "FINISHED", "aborted": "FAILED", "failed": "FAILED"}


def import_mlflow() -> Any:
    """mlflow, imported with its usage telemetry off (unless the user set it) and quiet logs."""
    import logging

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    mlflow = require("mlflow", "track")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return mlflow


@dataclass(frozen=True)
class Target:
    """Where runs go: the tracking URI, the experiment, and (local stores) where artifacts go."""

    tracking_uri: str
    experiment: str
    artifact_location: str | None

    @classmethod
    def resolve(cls, section: MlflowSection, name: str, near: Path) -> Target:
        """The section's values, defaults filled in: a SQLite file in `near`'s parent."""
        uri = section.tracking_uri or f"sqlite:///{near.resolve().parent / 'mlflow.db'}"
        return cls(uri, section.experiment or name, _local_artifacts(uri))

    def experiment_id(self, client: Any) -> str:
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        return client.create_experiment(self.experiment, artifact_location=self.artifact_location)


def _local_artifacts(uri: str) -> str | None:
    """Artifacts beside a local SQLite store (MLflow's own default is the working directory)."""
    if not uri.startswith("sqlite:///"):
        return None  # a server decides where its artifacts go
    db = Path(uri.removeprefix("sqlite:///"))
    return (db.parent / "mlartifacts").resolve().as_uri()


def git_commit() -> str | None:
    """The commit genlab's own source is at, when it runs from a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def run_tags(family: str, run_dir: Path) -> dict[str, str]:
    tags = {
        "genlab.family": family,
        "genlab.version": __version__,
        "genlab.run_dir": str(run_dir.resolve()),
    }
    commit = git_commit()
    if commit:
        tags["genlab.git_commit"] = commit
    return tags


def log_params(client: Any, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, as_text(v)[:PARAM_CHARS]) for k, v in params.items()]
    for i in range(0, len(items), PARAM_BATCH):
        client.log_batch(run_id, params=items[i : i + PARAM_BATCH])


def log_metrics(client: Any, run_id: str, metrics: Sequence[Any]) -> None:
    for i in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=list(metrics[i : i + BATCH]))


def log_outputs(client: Any, run_id: str, run: RunDir) -> None:
    """The run's files as artifacts (again after each command: they change)."""
    for path in (run.config, run.final_metrics, run.events, run.diagnosis, run.report):
        if path.is_file():
            client.log_artifact(run_id, str(path))
    if run.plots.is_dir() and any(run.plots.iterdir()):
        client.log_artifacts(run_id, str(run.plots), "plots")


def read_record(run: RunDir) -> dict[str, Any]:
    """mlflow.json ({} when absent or unreadable: the run then gets a new MLflow run)."""
    return read_json(run.mlflow_run)


class MlflowSink:
    def __init__(self, cfg: ExperimentConfig, run: RunDir, start_step: int):
        import_mlflow()
        from mlflow import MlflowClient

        from genlab.config import MlflowSection

        self.run = run
        target = Target.resolve(cfg.track.mlflow or MlflowSection(), cfg.name, run.root)
        self.client = MlflowClient(target.tracking_uri)
        record = read_record(run)
        self.skip_until = 0  # steps an earlier process already logged
        params = flatten(cfg.to_dict())
        same_store = record.get("tracking_uri") == target.tracking_uri
        if start_step and same_store and record.get("run_id"):
            self.run_id = record["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            self.skip_until = self._last_logged_step()
            self._note_changed_params(params)
        else:
            experiment_id = target.experiment_id(self.client)
            tags = run_tags(cfg.model.family, run.root)
            created = self.client.create_run(experiment_id, run_name=run.root.name, tags=tags)
            self.run_id = created.info.run_id
            log_params(self.client, self.run_id, params)
            record = {
                "tracking_uri": target.tracking_uri,
                "experiment": target.experiment,
                "experiment_id": experiment_id,
                "run_id": self.run_id,
            }
            atomic_write_text(run.mlflow_run, json.dumps(record, indent=2) + "\n")
        self.pending: list[Any] = []
        self.flushed = time.monotonic()
        self.last: dict[str, float] = {}
        self.last_step = start_step

    def _last_logged_step(self) -> int:
        history = self.client.get_metric_history(self.run_id, "time")
        return max((m.step for m in history), default=0)

    def _note_changed_params(self, params: dict[str, Any]) -> None:
        """MLflow params cannot change: a resume's overrides become tags, new keys params."""
        logged = self.client.get_run(self.run_id).data.params
        new = {k: v for k, v in params.items() if k not in logged}
        log_params(self.client, self.run_id, new)
        for key, value in params.items():
            if key in logged and logged[key] != as_text(value)[:PARAM_CHARS]:
                self.client.set_tag(self.run_id, f"genlab.resumed.{key}", as_text(value))

    def write(self, record: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        step = int(record["step"])
        self.last_step = max(self.last_step, step)
        if step <= self.skip_until:
            return
        now = int(time.time() * 1000)
        for key, value in scalars(record).items():
            self.pending.append(Metric(key, value, now, step))
            self.last[key] = value
        if len(self.pending) >= BATCH or time.monotonic() - self.flushed > FLUSH_EVERY_S:
            self.flush()

    def write_event(self, event: Mapping[str, Any]) -> None:
        pass  # guard/* counters are metrics; events.jsonl is an artifact at the end

    def add_samples(self, step: int, files: Sequence[Path]) -> None:
        for path in files:
            self.client.log_artifact(self.run_id, str(path), "samples")

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        self.flushed = time.monotonic()
        log_metrics(self.client, self.run_id, pending)

    def close(self, end: RunEnd) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for key, value in scalars(end.final).items():  # e.g. finetune/gain: only at the end
            if self.last.get(key) != value:
                self.pending.append(Metric(key, value, now, self.last_step))
        self.flush()
        log_outputs(self.client, self.run_id, self.run)
        self.client.set_tag(self.run_id, "genlab.status", end.status)
        if end.reason:
            self.client.set_tag(self.run_id, "genlab.end_reason", end.reason[:5000])
        self.client.set_terminated(self.run_id, status=END_STATUS.get(end.status, "KILLED"))


def attach_outputs(run: RunDir) -> bool:
    """After a command (train, resume, eval): the run's files (report.html included) and the
    full evaluations' `eval/...` numbers, into the MLflow run of mlflow.json. False when the
    run has none."""
    record = read_record(run)
    if not record.get("run_id"):
        return False
    import_mlflow()
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(record["tracking_uri"])
    run_id = record["run_id"]
    final = read_json(run.final_metrics)
    step = int(final.get("evaluated_step", final.get("step", 0)) or 0)
    now = int(time.time() * 1000)
    evaluated = {k: v for k, v in scalars(final).items() if k.startswith("eval/")}
    log_metrics(client, run_id, [Metric(k, v, now, step) for k, v in evaluated.items()])
    log_outputs(client, run_id, run)
    return True
