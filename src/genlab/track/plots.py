"""PNG plots of a run: loss curves with guard events marked, learning rate, grad norm."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt

EVENT_COLORS = {"skip": "tab:orange", "lr_cooldown": "tab:purple", "rollback": "tab:red"}


def plot_run(records: list[dict[str, Any]], events: list[dict[str, Any]], out_dir: Path) -> None:
    """loss.png, lr.png and grad_norm.png for any model family (GAN: one curve per network)."""
    keys = sorted({k for r in records for k in r})
    plot_loss(records, events, out_dir / "loss.png")
    for suffix, log in (("lr", False), ("grad_norm", True)):
        series = [k for k in keys if k.startswith("train/") and k.endswith(suffix)]
        if series:
            plot_series(records, series, out_dir / f"{suffix}.png", log=log)


def plot_loss(records: list[dict[str, Any]], events: list[dict[str, Any]], path: Path) -> None:
    """Train and val losses against step; vertical lines where the guard acted."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    keys = sorted({k for r in records for k in r})
    colors = iter(["tab:blue", "tab:orange", "tab:purple", "tab:brown"])
    for key in [k for k in keys if k.startswith("train/") and k.endswith("loss")]:
        steps, values = _series(records, key)
        finite = [(s, v) for s, v in zip(steps, values) if math.isfinite(v)]
        if finite:
            color = next(colors, "tab:gray")
            ax.plot(*zip(*finite), color=color, alpha=0.3, lw=0.8)
            ax.plot(*zip(*_smooth(finite)), color=color, lw=1.6, label=f"{key} (smoothed)")
    vsteps, val = _series(records, "val/loss")
    if vsteps:
        ax.plot(vsteps, val, "o-", color="tab:green", lw=1.6, ms=3, label="val/loss")
    labelled = set()
    for e in events:
        color = EVENT_COLORS.get(e.get("action"), "black")
        label = e["action"] if e["action"] not in labelled else None
        labelled.add(e["action"])
        ax.axvline(e["step"], color=color, ls="--", lw=0.9, alpha=0.8, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("loss (dashed lines: stability guard actions)" if events else "loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    _save(fig, path)


def plot_series(
    records: list[dict[str, Any]], keys: list[str], path: Path, log: bool = False
) -> None:
    fig, ax = plt.subplots(figsize=(8, 3))
    positive = True
    for key in keys:
        steps, vals = _series(records, key)
        ax.plot(steps, vals, lw=1.0, label=key)
        positive = positive and all(v > 0 for v in vals if math.isfinite(v))
    if log and positive:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(", ".join(keys))
    if len(keys) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in records if key in r and r[key] is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _smooth(points: list[tuple[int, float]], alpha: float = 0.1) -> list[tuple[int, float]]:
    out, ema = [], None
    for s, v in points:
        ema = v if ema is None else (1 - alpha) * ema + alpha * v
        out.append((s, ema))
    return out


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
