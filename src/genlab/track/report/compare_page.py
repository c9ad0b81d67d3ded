"""compare.html: two or more runs side by side. Curves overlaid (one chart per metric, one
line per run), a config table of only the keys that differ, every metric's best and final
value per run, and mean ± std over the runs when they differ only in their seed."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genlab.errors import ConfigError
from genlab.track.flat import as_text, flatten
from genlab.track.report import figures
from genlab.track.report.page import Page
from genlab.track.report.run_page import curve_groups, numeric_keys
from genlab.track.runs import RunSummary, direction, summarize

SEED_KEYS = {"seed", "name"}  # runs differing only here are repeats of one setting


def labels(paths: Sequence[Path]) -> list[str]:
    """Short unique names: the directory names, with parents added until they differ."""
    parts = [p.resolve().parts for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


def config_diff(summaries: Sequence[RunSummary]) -> list[tuple[str, list[str]]]:
    """(key, value per run) for every flattened config key whose values are not all equal."""
    flats = [flatten(s.config) for s in summaries]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    missing = object()
    rows = []
    for key in keys:
        values = [f.get(key, missing) for f in flats]
        if any(v != values[0] for v in values[1:]):
            rows.append((key, ["—" if v is missing else as_text(v) for v in values]))
    return rows


def best_and_final(s: RunSummary, key: str) -> tuple[float | None, float | None]:
    """The best logged value of `key` (min or max by the metric's direction; None for a
    metric without one) and the final one (metrics.json when it has the key, else the last
    logged)."""
    _, values = figures.series(s.records, key)
    finite = [v for v in values if v is not None]
    sign = direction(key)
    best = (max if sign > 0 else min)(finite) if finite and sign else None
    final = s.final.get(key)
    if not isinstance(final, int | float) or isinstance(final, bool):
        final = values[-1] if values else None
    return best, (float(final) if final is not None else None)


def metric_rows(summaries: Sequence[RunSummary], seed_only: bool) -> list[dict[str, Any]]:
    keys = list(dict.fromkeys(k for s in summaries for k in numeric_keys(s.records)))
    evaluated = [
        k
        for s in summaries
        for k, v in s.final.items()
        if k.startswith(("eval/", "finetune/")) and isinstance(v, int | float)
    ]
    keys += [k for k in dict.fromkeys(evaluated) if k not in keys]
    rows = []
    for key in keys:
        cells = [best_and_final(s, key) for s in summaries]
        finals = [f for _, f in cells if f is not None and math.isfinite(f)]
        row = {
            "key": key,
            "direction": {1: "↑", -1: "↓", 0: ""}[direction(key)],
            "cells": cells,
            "winner": _winner(cells, key),
        }
        if seed_only and len(finals) >= 2:
            row["mean"], row["std"] = statistics.fmean(finals), statistics.stdev(finals)
            row["n"] = len(finals)
        rows.append(row)
    return rows


def _winner(cells: list[tuple[float | None, float | None]], key: str) -> int | None:
    """Index of the run with the best final value; None without a direction, with fewer
    than two values, or when the best is shared."""
    finals = [(f, i) for i, (_, f) in enumerate(cells) if f is not None and math.isfinite(f)]
    sign = direction(key)
    if len(finals) < 2 or not sign:
        return None
    best = (max if sign > 0 else min)(f for f, _ in finals)
    holders = [i for f, i in finals if f == best]
    return holders[0] if len(holders) == 1 else None


def overlaid(summaries: Sequence[RunSummary], names: list[str]) -> list[dict[str, Any]]:
    """One chart per metric key, one line per run (the run report's grouping of keys)."""
    keys = list(dict.fromkeys(k for s in summaries for k in numeric_keys(s.records)))
    charts = []
    for group in curve_groups(keys):
        for key in group["keys"]:
            lines = {name: figures.series(s.records, key) for name, s in zip(names, summaries)}
            lines = {n: pts for n, pts in lines.items() if pts[0]}
            if not lines:
                continue
            sparse = [n for n, (steps, _) in lines.items() if len(steps) < 20]
            fig = figures.curves(key, lines, group["unit"], group["log_y"], markers=sparse)
            charts.append({"key": key, "figure": fig, "main": group["main"]})
    return charts


def write_compare_report(paths: list[Path], out: Path) -> Path:
    if len(paths) < 2:
        raise ConfigError(
            f"compare needs at least two runs, got {len(paths)}; pass e.g. "
            "`genlab compare runs/a runs/b`"
        )
    summaries = [summarize(p) for p in paths]
    names = labels(paths)
    diff = config_diff(summaries)
    differing = {key for key, _ in diff}
    seed_only = "seed" in differing and differing <= SEED_KEYS
    page = Page("comparison", f"{len(paths)} runs side by side")
    return page.write(
        out,
        "compare.html.j2",
        runs=list(zip(names, summaries)),
        paths=[str(p.resolve()) for p in paths],
        diff=diff,
        seed_only=seed_only,
        charts=overlaid(summaries, names),
        metrics=metric_rows(summaries, seed_only),
    )
