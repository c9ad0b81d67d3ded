"""`genlab eval` for `task: classify` runs: the classification report of a held-out split,
merged into the run's metrics.json, and plots/confusion.png.

Keys, all under `eval/<split>/` (report.py): `accuracy`; `precision_macro`, `recall_macro`,
`f1_macro` and the `_weighted` three (each class weighted by its support); per class
`precision/<class>`, `recall/<class>`, `f1/<class>` (details: support);
`baseline/majority_accuracy`, `baseline/majority_f1_macro` (always the train split's most
frequent class) and `baseline/chance_accuracy`, `baseline/chance_f1_macro` (uniform random
guessing, in expectation); the table `confusion_matrix` ({"labels", "rows"}: rows are true
classes, columns predicted). `--metrics robustness` perturbs the split's inputs with the
text (character noise, typos, case changes, word drops) or image (Gaussian noise, blur,
shift) perturbations of evaluation/robustness.py and reports the accuracy change per
perturbation and strength, `robustness/<perturbation>@<strength>`, with
plots/robustness.png.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from genlab.errors import ConfigError, DataError
from genlab.evaluation.classify import baselines, classification_report, plot_confusion
from genlab.evaluation.report import write_metrics_json
from genlab.evaluation.result import MetricResult, parse_metric_names
from genlab.evaluation.run import pick_checkpoint
from genlab.track.rundir import load_run_config, open_existing
from genlab.training import checkpoint as ckpt

KNOWN_METRICS = ("report", "robustness")
DEFAULT_METRICS = ("report",)
TEXT_STRENGTHS = (0.0, 0.05, 0.1, 0.2)
# Image perturbations scale with the image (a shift of strength 1 is a quarter of its width).
IMAGE_STRENGTHS = (0.0, 0.25, 0.5, 1.0)


def evaluate_classifier_run(
    run_dir: str | Path,
    split: str = "val",
    metrics: str | Sequence[str] | None = None,
    num_samples: int | None = None,
    checkpoint: str | Path | None = None,
    console: Console | None = None,
    write: bool = True,
) -> dict[str, MetricResult]:
    """Score a classify run on its held-out `split` (all of it, or `num_samples` evenly
    spaced examples) and merge the report into metrics.json (see the module doc)."""
    from genlab.training.build import build_family

    names = parse_metric_names(metrics, KNOWN_METRICS, DEFAULT_METRICS)
    if split not in ("val", "test"):
        raise ConfigError(f"--split must be 'val' or 'test', got {split!r}; use --split val")
    if num_samples is not None and num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {num_samples}; use e.g. 200")
    run = open_existing(Path(run_dir))
    cfg = load_run_config(run)
    if split == "test" and cfg.data.split.test <= 0:
        raise DataError(
            f"this run's data has no test split (data.split.test={cfg.data.split.test}); use "
            "--split val, or train with data.split.test=0.1 to get one"
        )
    info = pick_checkpoint(run, checkpoint)
    family = build_family(cfg, torch.device("cpu"), contextlib.nullcontext(), run.root)
    ckpt.load_checkpoint(info.path, family.modules)
    data, classes = family.data, family.classes
    raw, labels = data.raw(split), data.held_out(split)[1]
    picks = _evenly(len(labels), num_samples)
    raw = [raw[i] for i in picks] if isinstance(raw, list) else raw[picks]
    labels = labels[picks]
    say = console.print if console is not None else (lambda *_: None)
    say(f"evaluating {run.root} at step {info.step} on {split} ({len(labels)} examples)")

    def predict(inputs: Any) -> torch.Tensor:
        from genlab.training.classify_task import classifier_logits

        return classifier_logits(family.model, data.batches_of(inputs)).argmax(dim=1)

    predicted = predict(raw)
    majority = int(np.argmax(family.train_counts))
    results: dict[str, MetricResult] = {}
    tables: dict[str, Any] = {}
    if "report" in names:
        report = classification_report(
            labels.tolist(), predicted.tolist(), labels=list(range(len(classes)))
        )
        results.update(report_results(report, classes, split))
        base = baselines(labels.tolist(), majority, list(range(len(classes))))
        note = {"majority_class": classes[majority], "chance": "uniform over the classes"}
        for key, value in base.items():
            name = f"baseline/{key}"
            results[name] = MetricResult(name, value, len(labels), split, note)
        tables["confusion_matrix"] = {"labels": classes, "rows": report["confusion_matrix"]}
        plot = plot_confusion(report["confusion_matrix"], classes, run.plots / "confusion.png")
        say(f"wrote {plot}")
    if "robustness" in names:
        results.update(_robustness(data, raw, labels, predict, split, run.plots, cfg.seed))
    if write:
        path = write_metrics_json(run.root, results, split, info, tables)
        say(f"wrote {path}")
    return results


def report_results(
    report: dict[str, Any], classes: list[str], split: str
) -> dict[str, MetricResult]:
    """The report's numbers as MetricResults (names as in the module doc)."""
    n = report["n"]
    out = {"accuracy": MetricResult("accuracy", report["accuracy"], n, split)}
    for average in ("macro", "weighted"):
        for what in ("precision", "recall", "f1"):
            name = f"{what}_{average}"
            out[name] = MetricResult(name, report[average][what], n, split)
    for index, cls in enumerate(classes):
        entry = report["per_class"][str(index)]
        for what in ("precision", "recall", "f1"):
            name = f"{what}/{cls}"
            detail = {"support": entry["support"]}
            out[name] = MetricResult(name, entry[what], entry["support"], split, detail)
    return out


def _robustness(data, raw, labels, predict, split: str, plots: Path, seed: int):
    """Accuracy under each perturbation and strength; values are changes from the clean
    accuracy (negative: the classifier got worse)."""
    from genlab.evaluation.robustness import (
        IMAGE_PERTURBATIONS,
        TEXT_PERTURBATIONS,
        plot_robustness,
        robustness_table,
    )

    text = data.kind == "text"
    perturbations = TEXT_PERTURBATIONS if text else IMAGE_PERTURBATIONS
    strengths = TEXT_STRENGTHS if text else IMAGE_STRENGTHS

    def accuracy(inputs: Any) -> float:
        return float((predict(inputs) == labels).float().mean())

    table = robustness_table(accuracy, raw, perturbations, strengths, seed)
    plot = plot_robustness(table, plots / "robustness.png", "accuracy")
    results = {}
    for row in table:
        if row["strength"] == 0:
            continue
        name = f"robustness/{row['perturbation']}@{row['strength']:g}"
        detail = {
            "what": "accuracy change from the unperturbed inputs",
            "accuracy": row["metric"],
            "strength": row["strength"],
            "seed": seed,
            "plot": plot.name,
        }
        results[name] = MetricResult(name, row["delta"], len(labels), split, detail)
    return results


def _evenly(n: int, k: int | None) -> list[int]:
    """All positions, or `k` evenly spaced ones (deterministic)."""
    if k is None or k >= n:
        return list(range(n))
    return list(dict.fromkeys(np.linspace(0, n - 1, k).round().astype(int).tolist()))
