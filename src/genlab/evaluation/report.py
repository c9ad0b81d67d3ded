"""Evaluation results on disk and on screen: the `metrics.json` merge and the rich table.

`metrics.json` starts as the training loop's flat dict (`{"step", "split", "val/loss",
"val/perplexity", "val/bits_per_byte", "val/tokens", "val/bytes"}`: estimates on
`train.eval_batches` windows). A full evaluation (`genlab eval`) never reuses those keys: it
merges its own under `eval/<split>/<metric>`, so a training-time estimate and a full-split
number can never be confused:

- flat `"eval/<split>/<metric>": value` for each result (non-finite values as "nan"/"inf"
  strings, as in MetricResult.to_dict);
- `"details"`: `{"eval/<split>/<metric>": MetricResult.to_dict()}` (value, n samples, split,
  settings such as sacrebleu's signature, the bytes behind bits per byte), merged key by key
  with earlier evaluations;
- tables that are not one number (a classifier's `eval/<split>/confusion_matrix`: labels and
  rows of counts), as they are;
- `"evaluated_checkpoint"` (relative to the run dir when inside it) and `"evaluated_step"`.

The write is atomic (temp file, fsync, os.replace), so a crash leaves the old file or the new.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from genlab.errors import RunDirError
from genlab.evaluation.result import MetricResult
from genlab.fileio import atomic_write_text
from genlab.track.console import make_console
from genlab.training.checkpoint import CheckpointInfo

__all__ = ["METRICS_FILE", "eval_key", "print_table", "read_metrics_json", "write_metrics_json"]

METRICS_FILE = "metrics.json"


def read_metrics_json(path: Path) -> dict[str, Any]:
    """The current metrics.json as a dict ({} when absent). A file that is not a JSON object
    is an error rather than something to overwrite: it may hold results worth keeping."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunDirError(
            f"{str(path)!r} is not valid JSON ({exc}); move it aside and run the evaluation again"
        ) from exc
    if not isinstance(data, dict):
        raise RunDirError(
            f"{str(path)!r} holds a JSON {type(data).__name__}, not an object; move it aside "
            "and run the evaluation again"
        )
    return data


def eval_key(split: str, name: str) -> str:
    """metrics.json key of a full evaluation's metric: `eval/<split>/<name>`."""
    return f"eval/{split}/{name}"


def _checkpoint_name(run_root: Path, checkpoint: CheckpointInfo) -> str:
    try:
        return str(checkpoint.path.resolve().relative_to(run_root.resolve()))
    except ValueError:  # a checkpoint outside the run (--checkpoint elsewhere)
        return str(checkpoint.path.resolve())


def write_metrics_json(
    run_root: Path,
    results: Mapping[str, MetricResult],
    split: str,
    checkpoint: CheckpointInfo,
    tables: Mapping[str, Any] | None = None,
) -> Path:
    """Merge `results` into run_root/metrics.json (see module doc) and return its path.
    `tables`: JSON structures that are not one number (a classifier's confusion matrix),
    stored as they are under `eval/<split>/<name>`."""
    path = Path(run_root) / METRICS_FILE
    data = read_metrics_json(path)
    details = dict(data.get("details") or {})
    for name, table in (tables or {}).items():
        data[eval_key(split, name)] = table
    for name, result in results.items():
        entry = result.to_dict()
        data[eval_key(split, name)] = entry["value"]
        details[eval_key(split, name)] = entry
    data["details"] = details
    data["evaluated_checkpoint"] = _checkpoint_name(Path(run_root), checkpoint)
    data["evaluated_step"] = checkpoint.step
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


def _summary(result: MetricResult) -> str:
    """A short human line from the details: what makes the number comparable, the sample
    counts behind it, and a warning sign when they are too few for a trustworthy estimate."""
    d = result.details
    text = _settings(result)
    if "n_real" in d:
        counts = f"{d['n_fake']:,} generated vs {d['n_real']:,} real"
        text = f"{counts} · {text}" if text else counts
    if d.get("caveat"):
        text = f"⚠ {d['caveat']} · {text}"
    return text


def _settings(result: MetricResult) -> str:
    d = result.details
    if result.name == "kid" and "std" in d:
        spread = f"± {d['std']:.4g} over {d['subsets']} subsets of {d['subset_size']}"
        return f"raw MMD² (not ×1000) {spread}"
    if "feature_dim" in d:
        return f"{d['extractor']} features ({d['feature_dim']}-d)"
    if "signature" in d:
        extra = f" · {d['decoding']}" if "decoding" in d else ""
        return f"{d['signature']}{extra}"
    if "clean_nll" in d:
        return f"nll {d['nll']:.4f} vs clean {d['clean_nll']:.4f}"
    if "windows" in d:
        text = f"{d['windows']} windows of {d['block_size']} tokens"
        if "n_bytes" in d:
            text += f", {d['n_bytes']:,} bytes"
        return text
    return ""


def print_table(results: Mapping[str, MetricResult], console: Console | None = None) -> None:
    """Print one row per metric: name, value, n (tokens / pairs), and a details summary."""
    console = console or make_console()
    table = Table(title="evaluation", show_lines=False)
    table.add_column("metric", overflow="fold")  # whole names, never cut with an ellipsis
    table.add_column("value", justify="right")
    table.add_column("n", justify="right")
    table.add_column("details", overflow="fold")
    for name, r in results.items():
        split = f"{r.split}/" if r.split else ""
        table.add_row(f"{split}{name}", f"{r.value:.4f}", f"{r.n:,}", _summary(r))
    console.print(table)
