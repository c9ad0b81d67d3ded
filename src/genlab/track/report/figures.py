"""Plotly figures of the report pages, as plain figure dicts (plotly's JSON schema): no
validation pass over every point, so a report of a long run stays quick to write. page.js
hands them to plotly.js, which draws them with hover values and zoom."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Colours per guard action (the same meaning as the PNG plots in track/plots.py).
ACTION_COLORS = {
    "skip": "#ff7f0e",
    "lr_cooldown": "#9467bd",
    "rollback": "#d62728",
    "abort": "#111111",
}
PALETTE = ["#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]

Series = tuple[list[int], list[float | None]]


def series(records: Iterable[Mapping[str, Any]], key: str) -> Series:
    """(steps, values) of `key` over the records that have it; NaN/inf become None (a gap:
    the guard events say what happened there)."""
    steps, values = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and "step" in r:
            steps.append(int(r["step"]))
            values.append(float(v) if math.isfinite(v) else None)
    return steps, values


def layout(title: str, y_title: str = "", log_y: bool = False, x_title: str = "step") -> dict:
    return {
        "title": {"text": title, "x": 0.01, "font": {"size": 14}},
        "template": "plotly_white",
        "margin": {"l": 60, "r": 20, "t": 40, "b": 45},
        "hovermode": "x unified",
        "legend": {"orientation": "h", "y": -0.22, "x": 0},
        "xaxis": {"title": {"text": x_title}},
        "yaxis": {"title": {"text": y_title}, "type": "log" if log_y else "linear"},
    }


def line(name: str, data: Series, color: str | None = None, **extra: Any) -> dict:
    trace = {"type": "scatter", "mode": "lines", "name": name, "x": data[0], "y": data[1]}
    if color:
        trace["line"] = {"color": color, "width": 1.6}
    return {**trace, **extra}


def curves(
    title: str,
    lines: Mapping[str, Series],
    y_title: str = "",
    log_y: bool = False,
    events: Sequence[Mapping[str, Any]] = (),
    markers: Sequence[str] = (),
) -> dict:
    """Curves against step; guard events as dashed lines plus a hoverable marker each.
    Keys in `markers` are drawn with points (sparse series such as evaluations)."""
    data = []
    for i, (name, points) in enumerate(lines.items()):
        mode = "lines+markers" if name in markers else "lines"
        data.append(line(name, points, PALETTE[i % len(PALETTE)], mode=mode))
    fig = {"data": data, "layout": layout(title, y_title, log_y and _positive(lines))}
    if events:
        mark_events(fig, events, lines)
    return fig


def _positive(lines: Mapping[str, Series]) -> bool:
    return all(v is None or v > 0 for _, values in lines.values() for v in values)


def mark_events(fig: dict, events: Sequence[Mapping[str, Any]], lines: Mapping[str, Series]):
    """A dashed vertical line per event and a marker (on the first curve) with its details."""
    shapes = []
    first = next(iter(lines.values()), ([], []))
    at = dict(zip(*first))
    known = [v for v in first[1] if v is not None]
    floor = min(known) if known else 0.0
    by_action: dict[str, dict] = {}
    for e in events:
        step, action = int(e.get("step", 0)), str(e.get("action", ""))
        color = ACTION_COLORS.get(action, "#444444")
        shapes.append(
            {
                "type": "line",
                "x0": step,
                "x1": step,
                "yref": "paper",
                "y0": 0,
                "y1": 1,
                "line": {"color": color, "width": 1, "dash": "dash"},
            }
        )
        trace = by_action.setdefault(
            action,
            {
                "type": "scatter",
                "mode": "markers",
                "name": f"guard: {action}",
                "x": [],
                "y": [],
                "text": [],
                "marker": {"color": color, "size": 10, "symbol": "x"},
                "hovertemplate": "%{text}<extra></extra>",
            },
        )
        value = at.get(step)
        trace["x"].append(step)
        trace["y"].append(value if value is not None else floor)
        trace["text"].append(f"step {step}: {e.get('kind')} → {action}")
    fig["data"].extend(by_action.values())
    fig["layout"]["shapes"] = shapes


def grouped(
    title: str,
    x: Sequence[Any],
    groups: Mapping[str, Sequence[float | None]],
    x_title: str,
    y_title: str,
) -> dict:
    """One line with markers per group over a shared x (robustness: strength → change)."""
    data = [
        {"type": "scatter", "mode": "lines+markers", "name": name, "x": list(x), "y": list(ys),
         "line": {"color": PALETTE[i % len(PALETTE)]}}
        for i, (name, ys) in enumerate(groups.items())
    ]  # fmt: skip
    fig = {"data": data, "layout": layout(title, y_title, x_title=x_title)}
    fig["layout"]["hovermode"] = "closest"
    return fig


def intervals(
    title: str,
    labels: Sequence[str],
    means: Sequence[float],
    errors: Sequence[float],
    y_title: str,
) -> dict:
    """Means with ± error bars (the study's final stage: mean ± 95% CI per config)."""
    data = [
        {"type": "scatter", "mode": "markers", "x": list(labels), "y": list(means),
         "error_y": {"type": "data", "array": list(errors), "visible": True},
         "marker": {"size": 10, "color": PALETTE[0]}, "name": "mean ± 95% CI"}
    ]  # fmt: skip
    fig = {"data": data, "layout": layout(title, y_title, x_title="")}
    fig["layout"]["hovermode"] = "closest"
    fig["layout"]["xaxis"]["type"] = "category"
    return fig
