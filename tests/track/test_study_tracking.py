"""A tuning study in MLflow (one parent run, one child per trial, read back with MlflowClient
against trials.csv) and its report (trials table, failures with reasons, the final stage's
mean ± 95% CI checked against scipy)."""

from __future__ import annotations

import csv
import html
import json
import math
import re
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from scipy import stats

from genlab.track.fmt import number


def trials(study_dir: Path) -> dict[int, dict]:
    with (study_dir / "trials.csv").open() as f:
        return {int(r["number"]): r for r in csv.DictReader(f)}


def test_one_parent_run_and_a_child_per_trial(study: Path):
    record = json.loads((study / "mlflow.json").read_text())
    client = MlflowClient(record["tracking_uri"])
    parent = client.get_run(record["run_id"])
    assert parent.data.tags["genlab.kind"] == "study" and parent.info.status == "FINISHED"
    children = client.search_runs(
        [record["experiment_id"]], f"tags.mlflow.parentRunId = '{record['run_id']}'"
    )
    rows = trials(study)
    assert sorted(int(c.data.tags["genlab.trial"]) for c in children) == sorted(rows)
    for child in children:
        row = rows[int(child.data.tags["genlab.trial"])]
        assert float(child.data.params["optim.lr"]) == float(row["optim.lr"])
        assert child.data.tags["genlab.state"] == row["state"]
        if row["state"] == "COMPLETE":
            assert child.info.status == "FINISHED"
            assert child.data.metrics["val/loss"] == float(row["value"])
            assert child.data.metrics["trial/steps"] == float(row["steps"])
        else:
            assert child.info.status == "FAILED"
            assert child.data.tags["genlab.failure"] == row["failure"]
    complete = [float(r["value"]) for r in rows.values() if r["state"] == "COMPLETE"]
    assert parent.data.metrics["best/val/loss"] == min(complete)
    files = {a.path for a in client.list_artifacts(record["run_id"])}
    assert {"trials.csv", "best.yaml", "report.html", "final", "plots"} <= files


def test_the_study_report(study: Path):
    page = (study / "report.html").read_text()
    rows = trials(study)
    assert "val/loss (minimize)" in page
    table = page[page.index('id="trials"') : page.index('id="failed"')]
    assert table.count("<tr class=") == len(rows)
    failed = page[page.index('id="failed"') :]
    for row in rows.values():
        if row["state"] == "FAIL":
            assert html.escape(row["failure"], quote=False) in html.unescape(failed)
    results = json.loads((study / "final" / "results.json").read_text())
    values = [v["value"] for v in results.values()]
    mean = float(np.mean(values))
    ci95 = float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(2))
    final = page[page.index('id="final"') : page.index('id="trials"')]
    assert re.search(
        rf">{re.escape(number(mean))}</td><td[^>]*>{re.escape(number(ci95, 3))}<", final
    )
    assert page.count('class="figure"') >= 2  # optimization history and the final stage


def test_best_parameters_name_only_searched_settings(tmp_path: Path):
    """trials.csv also carries bookkeeping columns (a bug's traceback file, retries): the
    summary's "best parameters" are the searched settings alone."""
    from genlab.track.report.study_page import build_context

    (tmp_path / "trials.csv").write_text(
        "number,state,value,optim.lr,model.dropout,error_file,retry_of,failure\n"
        "0,COMPLETE,2.5,0.001,0.1,,,\n"
        "1,FAIL,,0.01,0.2,errors/trial-1.txt,,ValueError\n"
    )
    assert build_context(tmp_path)["params"] == ["optim.lr", "model.dropout"]


def test_metric_directions_for_best_values():
    from genlab.track.runs import direction

    assert direction("throughput/mfu") == 1  # a larger share of the peak is better
    assert direction("throughput/tokens_per_s") == 1
    assert direction("val/loss") == -1 and direction("memory/peak_mb") == 0
