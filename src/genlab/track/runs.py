"""Discover run directories and summarise each: what `genlab runs` lists, and what the run
report's summary card and the comparison page start from.

A run directory holds config.yaml and metrics.jsonl, or config.yaml and compression.json
(what `genlab compress` writes: a compressed run has no training log of its own); a checkpoint
directory holds a config.yaml too, but neither. Its status comes from its files:

- running:  a live process holds RUN_DIR/.running (track/rundir.py RunLock);
- aborted:  the stability guard's last event is an `abort` (diagnosis.txt says why);
- finished: metrics.json (written at the end of a run) is at or past the last logged step;
- compressed: written by `genlab compress` (compression.json and no metrics.jsonl);
- crashed:  none of these: the process stopped before the end (killed, Ctrl-C, a bug).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from genlab import safe_yaml
from genlab.compression.table import TABLE_FILE as COMPRESSION_FILE
from genlab.errors import ConfigError, RunDirError
from genlab.track.fmt import number, seconds
from genlab.track.logs import read_jsonl
from genlab.track.rundir import RunDir, is_running

SKIP_DIRS = {"checkpoints", "samples", "plots", "tb", "adapter", "hf_model", "mlartifacts"}
# The metric a run is judged by in listings, first present wins (a GAN has no val/loss).
HEADLINE_METRICS = (
    "val/loss",
    "eval/val/fid",
    "val/spread_ratio",
    "train/loss",
    "train/g_loss",
    "eval/val/perplexity",
)  # the last: a compressed run, evaluated only
# Name parts of metrics where higher is better; for every other metric lower is.
HIGHER_IS_BETTER = ("accuracy", "bleu", "chrf", "precision", "recall", "density",
                    "coverage", "f1", "elbo", "per_s", "mfu", "gain",
                    "spread_ratio")  # fmt: skip


# Metrics that are settings or costs rather than results: no "best" value.
NO_DIRECTION = ("lr", "time", "peak_mb", "state_mb", "tokens", "bytes", "trainable", "total")


def direction(key: str) -> int:
    """+1 when a larger value of metric `key` is better, -1 when a smaller one is, 0 when
    neither (learning rates, memory, counts)."""
    name = key.rsplit("/", 1)[-1]
    if name.endswith(NO_DIRECTION) or key.startswith("memory/"):
        return 0
    return 1 if any(part in name for part in HIGHER_IS_BETTER) else -1


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; {} when absent, unreadable or not an object (a listing
    shows what it can; `genlab report` names damaged files itself)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_config(run: RunDir) -> dict[str, Any]:
    """The run's resolved config as plain data ({} when unreadable)."""
    try:
        data = safe_yaml.load(run.config.read_text(encoding="utf-8"), "config.yaml")
    except (OSError, yaml.YAMLError, UnicodeDecodeError, ConfigError):
        return {}
    return data if isinstance(data, dict) else {}


def is_run_dir(path: Path) -> bool:
    if not (path / "config.yaml").is_file():
        return False
    return (path / "metrics.jsonl").is_file() or (path / COMPRESSION_FILE).is_file()


def find_runs(root: Path) -> list[Path]:
    """Run directories at or below `root` (depth-first, sorted), not looking inside a run's
    own checkpoints/, samples/, plots/ or tb/."""
    root = Path(root)
    if not root.is_dir():
        kind = "is a file" if root.exists() else "does not exist"
        raise RunDirError(
            f"{str(root)!r} {kind}; pass a directory holding runs, e.g. `genlab runs runs`"
        )
    found: list[Path] = []

    def visit(path: Path) -> None:
        if is_run_dir(path):
            found.append(path)
        try:
            children = sorted(p for p in path.iterdir() if p.is_dir())
        except OSError:
            return
        for child in children:
            if child.name not in SKIP_DIRS and not child.name.startswith("."):
                visit(child)

    visit(root)
    return found


@dataclass
class RunSummary:
    """One run at a glance."""

    path: Path
    name: str
    family: str
    status: str
    step: int
    max_steps: int | None
    wall_s: float | None
    metric: str | None
    value: float | None
    guard_events: int
    config: dict[str, Any] = field(repr=False)
    records: list[dict[str, Any]] = field(repr=False)
    events: list[dict[str, Any]] = field(repr=False)
    final: dict[str, Any] = field(repr=False)


def last_step(records: list[dict], events: list[dict]) -> int:
    """The step a run got to: its last logged record, or a later guard event (an abort
    stops the step before its record is written)."""
    steps = [r.get("step", 0) for r in records[-1:]] + [e.get("step", 0) for e in events[-1:]]
    return int(max(steps, default=0))


def status_of(run: RunDir, records: list[dict], events: list[dict], final: dict) -> str:
    if is_running(run):
        return "running"
    if not run.metrics.is_file() and (run.root / COMPRESSION_FILE).is_file():
        return "compressed"
    last_step = records[-1].get("step", 0) if records else 0
    aborts = [e for e in events if e.get("action") == "abort"]
    final_step = final.get("step")
    if aborts and (final_step is None or aborts[-1].get("step", 0) >= final_step):
        return "aborted"
    if isinstance(final_step, int) and final_step >= last_step:
        return "finished"
    return "crashed"


def headline(final: dict[str, Any], records: list[dict]) -> tuple[str | None, float | None]:
    """The run's judging metric and its final value (metrics.json, else the last logged)."""
    for key in HEADLINE_METRICS:
        value = final.get(key)
        if value is None:
            value = next((r[key] for r in reversed(records) if key in r), None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return key, float(value)
    return None, None


def summarize(path: Path) -> RunSummary:
    """A RunSummary of the run at `path` (RunDirError when it is not one)."""
    path = Path(path)
    if not is_run_dir(path):
        raise RunDirError(
            f"{str(path)!r} is not a genlab run directory (it needs config.yaml and "
            "metrics.jsonl); pass a directory `genlab train` or `genlab compress` wrote, e.g. "
            "runs/lm"
        )
    run = RunDir(path)
    cfg = read_config(run)
    records = read_jsonl(run.metrics)
    events = read_jsonl(run.events)
    final = read_json(run.final_metrics)
    metric, value = headline(final, records)
    wall = next((r["time"] for r in reversed(records) if "time" in r), None)
    guard = sum(1 for e in events if e.get("kind") != "fp16_overflow")
    return RunSummary(
        path=path,
        name=str(cfg.get("name", path.name)),
        family=str(cfg.get("model", {}).get("family", "?")),
        status=status_of(run, records, events, final),
        step=last_step(records, events) or int(final.get("step") or 0),  # compressed: no log
        max_steps=cfg.get("train", {}).get("max_steps"),
        wall_s=float(wall) if isinstance(wall, int | float) else None,
        metric=metric,
        value=value,
        guard_events=guard,
        config=cfg,
        records=records,
        events=events,
        final=final,
    )


def list_runs(root: str | Path = "runs") -> list[RunSummary]:
    """Every run below `root`, summarised."""
    return [summarize(p) for p in find_runs(Path(root))]


def print_runs(summaries: list[RunSummary], root: Path, console: Any = None) -> None:
    """The `genlab runs` table."""
    from rich.console import Console
    from rich.table import Table

    if console is None:  # piped into a file or another program: no 80-column wrapping
        console = Console() if sys.stdout.isatty() else Console(width=200)
    if not summaries:
        console.print(f"no runs under {root} (a run directory holds config.yaml and metrics.jsonl)")
        return
    table = Table(title=f"runs under {root}")
    table.add_column("run", overflow="fold")
    for col in ("family", "status", "steps", "metric", "value", "wall", "guard events"):
        right = col in ("steps", "value", "wall", "guard events")
        table.add_column(col, justify="right" if right else "left")
    colors = {"finished": "green", "aborted": "red", "running": "cyan", "crashed": "yellow"}
    for s in summaries:
        try:
            shown = str(s.path.relative_to(root))
        except ValueError:
            shown = str(s.path)
        table.add_row(
            shown,
            s.family,
            f"[{colors.get(s.status, 'white')}]{s.status}[/]",
            f"{s.step}/{s.max_steps}" if s.max_steps else str(s.step),
            s.metric or "-",
            number(s.value) if s.value is not None else "-",
            seconds(s.wall_s) if s.wall_s is not None else "-",
            str(s.guard_events),
        )
    console.print(table)
