"""The report of a tuning study (a `genlab tune` study directory): the trials table
(sortable), the optimization history, parameter importances and parallel coordinates
(Optuna's own plotly figures, from the study's storage), the final stage's top-k on fresh
seeds with 95% confidence intervals, and the failed trials with their reasons."""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path
from typing import Any

from genlab.track.report import figures
from genlab.track.report.page import Page
from genlab.tuning.bugs import ERROR_FILE

NUMERIC_COLUMNS = ("number", "value", "mean", "std", "duration_s", "steps")


def read_trials(study_dir: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """trials.csv as (columns, rows); numbers as numbers."""
    path = study_dir / "trials.csv"
    if not path.is_file():
        return [], []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = [{k: _number(v) for k, v in row.items()} for row in reader]
    return columns, rows


def _number(text: Any) -> Any:
    if not isinstance(text, str) or text == "":
        return text
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value


def load_study(study_dir: Path) -> tuple[Any, str]:
    """The Optuna study in the study directory's own storage (study.db or journal.log), or
    (None, why not): a study on a database server is read where it lives, by `genlab tune`."""
    if not ((study_dir / "study.db").is_file() or (study_dir / "journal.log").is_file()):
        return None, "the study's storage is not in its directory (tune.storage is a server)"
    from genlab.errors import require
    from genlab.tuning.storage import open_storage, storage_spec

    optuna = require("optuna", "tune")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_spec(None, study_dir, 1), max_retry=0)
    names = optuna.get_all_study_names(storage)
    if not names:
        return None, "the storage holds no study"
    studies = [optuna.load_study(study_name=n, storage=storage) for n in names]
    return max(studies, key=lambda s: len(s.trials)), ""


def optuna_figures(study: Any, metric: str) -> list[dict[str, Any]]:
    """Optimization history, parameter importances, parallel coordinates: each a figure or
    the reason it is not drawn (too few complete trials, no varied parameter, ...)."""
    from optuna import visualization as vis

    plots = [
        ("optimization history", lambda: vis.plot_optimization_history(study, target_name=metric)),
        ("parameter importances", lambda: vis.plot_param_importances(study, target_name=metric)),
        ("parallel coordinates", lambda: vis.plot_parallel_coordinate(study, target_name=metric)),
    ]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    out = []
    for title, make in plots:
        if len(complete) < (2 if title != "optimization history" else 1):
            out.append({"title": title, "reason": f"needs more complete trials ({len(complete)})"})
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fig = make()
        except Exception as exc:  # e.g. importances of a space with nothing varied
            out.append({"title": title, "reason": f"{type(exc).__name__}: {exc}"[:200]})
            continue
        fig.update_layout(title={"text": title, "x": 0.01}, template="plotly_white")
        out.append({"title": title, "figure": fig})
    return out


def final_stage(study_dir: Path, direction: str) -> list[dict[str, Any]]:
    """final/results.json grouped per trial: values on fresh seeds, mean ± 95% CI (the
    tuner's FinalRow does the arithmetic), failures."""
    from genlab.tuning.final import FinalRow

    try:
        done = json.loads((study_dir / "final" / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    rows: dict[int, FinalRow] = {}
    for key, result in done.items():
        trial, _, seed = key.partition("-seed")
        if not trial.isdigit() or not isinstance(result, dict):
            continue
        row = rows.setdefault(int(trial), FinalRow(int(trial), {}, []))
        if "value" in result:
            row.values.append(float(result["value"]))
        else:
            row.failures.append(f"seed {seed}: {result.get('failure', '?')}")
    sign = 1.0 if direction == "minimize" else -1.0
    ordered = sorted(rows.values(), key=lambda r: sign * r.mean if r.values else math.inf)
    return [
        {"trial": r.trial, "mean": r.mean, "ci95": r.ci95, "n": len(r.values),
         "values": r.values, "failures": r.failures, "winner": i == 0 and bool(r.values)}
        for i, r in enumerate(ordered)
    ]  # fmt: skip


def build_context(study_dir: Path) -> dict[str, Any]:
    columns, rows = read_trials(study_dir)
    study, why = load_study(study_dir)
    metric = "value"
    direction = "minimize"
    plots: list[dict[str, Any]] = []
    if study is not None:
        metric = (study.metric_names or [None])[0] or "value"
        direction = study.direction.name.lower()
        plots = optuna_figures(study, metric)
    sign = 1.0 if direction == "minimize" else -1.0
    complete = [r for r in rows if r.get("state") == "COMPLETE" and r.get("value") != ""]
    best = min(complete, key=lambda r: sign * float(r["value"])) if complete else None
    final = final_stage(study_dir, direction)
    if final and final[0]["n"] > 1:
        plots.append(
            {
                "title": "final stage",
                "figure": figures.intervals(
                    "final stage: mean ± 95% CI on fresh seeds",
                    [f"trial {r['trial']}" for r in final if r["n"]],
                    [r["mean"] for r in final if r["n"]],
                    [r["ci95"] if math.isfinite(r["ci95"]) else 0.0 for r in final if r["n"]],
                    metric,
                ),
            }
        )
    params = [c for c in columns if c not in NUMERIC_COLUMNS and c not in (
        "state", "failure", "retry_of", "guard_events", ERROR_FILE)
        and not c.startswith("value:")]  # fmt: skip
    states = [r.get("state") for r in rows]
    best_yaml = study_dir / "best.yaml"
    return {
        "name": study.study_name if study is not None else study_dir.name,
        "study_dir": str(study_dir.resolve()),
        "metric": metric,
        "direction": direction,
        "counts": {s: states.count(s) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")},
        "total": len(rows),
        "best": best,
        "params": params,
        "columns": columns,
        "rows": rows,
        "failed": [r for r in rows if r.get("state") == "FAIL"],
        "plots": plots,
        "storage_note": why,
        "final": final,
        "best_yaml": best_yaml.read_text(encoding="utf-8") if best_yaml.is_file() else "",
    }


def write_study_report(study_dir: Path, out: Path) -> Path:
    page = Page("study report", Path(study_dir).resolve().name)
    return page.write(out, "study.html.j2", **build_context(Path(study_dir)))
