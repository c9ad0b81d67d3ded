"""MLflow's own client reads back what a run logged: every metrics.jsonl number with its step,
the flattened config as params, the tags, the files as artifacts; the default store is a local
SQLite file beside the run; a resume continues the same MLflow run and never logs a step
twice (TensorBoard hides the replayed steps too)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from mlflow import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import genlab
from genlab.track.flat import as_text, flatten
from genlab.track.logs import read_jsonl
from testkit import TINY

MAX_FLOAT = np.finfo(np.float64).max  # MLflow's SQL store keeps +inf as the largest double


def mlflow_run(run_dir: Path) -> tuple[MlflowClient, str, dict]:
    record = json.loads((run_dir / "mlflow.json").read_text())
    return MlflowClient(record["tracking_uri"]), record["run_id"], record


def expected_metrics(run_dir: Path) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for r in read_jsonl(run_dir / "metrics.jsonl"):
        for key, value in r.items():
            if key != "step" and isinstance(value, int | float):
                out.setdefault(key, {})[r["step"]] = float(value)
    return out


def same(logged: float, expected: float) -> bool:
    if math.isnan(expected):
        return math.isnan(logged)
    return logged == (MAX_FLOAT if expected == math.inf else expected)


def history(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    points = client.get_metric_history(run_id, key)
    steps = [m.step for m in points]
    assert len(steps) == len(set(steps)), f"{key}: a step logged twice"
    return {m.step: m.value for m in points}


def test_every_metric_reads_back_with_its_step(tracked_run: Path, track_root: Path):
    client, run_id, record = mlflow_run(tracked_run)
    assert record["tracking_uri"] == f"sqlite:///{track_root.resolve() / 'mlflow.db'}"
    expected = expected_metrics(tracked_run)
    assert set(client.get_run(run_id).data.metrics) == set(expected)
    for key, by_step in expected.items():
        logged = history(client, run_id, key)
        assert logged.keys() == by_step.keys(), key
        bad = [s for s, v in by_step.items() if not same(logged[s], v)]
        assert not bad, (key, bad[:3])
    assert math.isnan(history(client, run_id, "train/loss")[7])  # the injected NaN


def test_params_tags_and_artifacts(tracked_run: Path, track_root: Path):
    client, run_id, _ = mlflow_run(tracked_run)
    run = client.get_run(run_id)
    config = yaml.safe_load((tracked_run / "config.yaml").read_text())
    assert run.data.params == {k: as_text(v) for k, v in flatten(config).items()}
    assert run.data.params["optim.lr"] == "0.003" and run.data.params["track.tensorboard"] == "true"
    tags = run.data.tags
    assert tags["genlab.family"] == "gpt" and tags["genlab.version"] == genlab.__version__
    assert tags["genlab.status"] == "finished" and run.info.status == "FINISHED"
    assert tags["genlab.run_dir"] == str(tracked_run.resolve())
    head = subprocess.run(
        ["git", "-C", str(Path(genlab.__file__).parent), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    if head.returncode == 0:
        assert tags["genlab.git_commit"] == head.stdout.strip()
    assert run.info.artifact_uri.startswith((track_root.resolve() / "mlartifacts").as_uri())
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "metrics.json", "events.jsonl", "report.html", "plots", "samples"} <= top
    samples = {a.path for a in client.list_artifacts(run_id, "samples")}
    assert samples == {"samples/step-10.txt", "samples/step-20.txt"}
    assert "plots/loss.png" in {a.path for a in client.list_artifacts(run_id, "plots")}
    copy = Path(client.download_artifacts(run_id, "report.html", str(track_root / "dl")))
    assert copy.read_bytes() == (tracked_run / "report.html").read_bytes()


def test_resume_continues_the_same_runs_and_logs_each_step_once(track_root: Path):
    run = track_root / "resumed"
    every = ["train.checkpoint_every=5", "train.eval_every=5", "train.sample_every=5"]
    tracked = ["track.tensorboard=true", "track.mlflow=true", "track.report=false"]
    genlab.train(None, run, [*TINY, "train.max_steps=10", *every, *tracked])
    first_id = mlflow_run(run)[1]
    # A crash after step 10 was logged but before its checkpoint: the resume starts at step 5
    # and trains steps 6-10 again (with the same max_steps: the lr schedule depends on it).
    shutil.rmtree(run / "checkpoints" / "step-10")
    genlab.resume(run)
    genlab.resume(run, ["train.max_steps=15"])  # and on to 15
    client, run_id, _ = mlflow_run(run)
    assert run_id == first_id
    records = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 16))
    tb = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    tb.Reload()
    for key in ("train/loss", "train/grad_norm", "train/lr"):  # deterministic: replay == first
        expected = {r["step"]: r[key] for r in records}
        assert history(client, run_id, key) == expected
        tb_steps = [e.step for e in tb.Scalars(key)]
        assert tb_steps == list(range(1, 16))  # purge_step hid the first process's 6-10
        assert {e.step: e.value for e in tb.Scalars(key)} == {
            s: float(np.float32(v)) for s, v in expected.items()
        }
    finished = client.get_run(run_id)
    assert finished.info.status == "FINISHED"
    # MLflow params cannot change: the resume's override is kept as a tag.
    assert finished.data.params["train.max_steps"] == "10"
    assert finished.data.tags["genlab.resumed.train.max_steps"] == "15"


def test_server_down_warns_once_and_the_run_finishes(tmp_path: Path):
    """Nothing listens on the port: MLflow fails; training goes on, metrics.jsonl is whole."""
    from testkit import free_port

    run = tmp_path / "run"
    (tmp_path / "empty.yaml").write_text("name: down\n")
    uri = f"http://127.0.0.1:{free_port()}"
    env_knobs = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("genlab")),
            "train",
            "empty.yaml",
            *TINY,
            "train.max_steps=10",
            f"track.mlflow={{tracking_uri: '{uri}'}}",
            "track.report=false",
            "--run-dir",
            str(run),
        ],
        cwd=tmp_path,
        env={**os.environ, **env_knobs, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    warnings = [line for line in proc.stderr.splitlines() if "tracking to mlflow failed" in line]
    assert len(warnings) == 1, proc.stderr[-2000:]
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == list(range(1, 11))
    assert not (run / "mlflow.json").exists()
