"""PNG plots of a run: loss curves with guard events marked, learning rate, grad norm."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from genlab.track.figures import new_figure, plain_log_ticks, save_figure

EVENT_COLORS = {"skip": "tab:orange", "lr_cooldown": "tab:purple", "rollback": "tab:red"}


# Guard findings made inside an optimizer step: that iteration's updates never reached the
# weights, so its loss belongs to no training curve (detector findings between iterations,
# such as mode collapse, leave the step's loss as it was).
IN_STEP_KINDS = frozenset(
    {"nonfinite_loss", "nonfinite_grad", "loss_spike", "grad_explosion", "loss_divergence",
     "fp16_overflow"}
)  # fmt: skip
Y_LABELS = {"lr": "learning rate", "grad_norm": "gradient norm"}
TITLE_NOTES = {"lr": "", "grad_norm": "before clipping"}


def plot_run(records: list[dict[str, Any]], events: list[dict[str, Any]], out_dir: Path) -> None:
    """loss.png, lr.png and grad_norm.png for any model family (GAN: one curve per network)."""
    keys = sorted({k for r in records for k in r})
    plot_loss(records, events, out_dir / "loss.png")
    for suffix, log in (("lr", False), ("grad_norm", True)):
        series = [k for k in keys if k.startswith("train/") and k.endswith(suffix)]
        if series:
            path = out_dir / f"{suffix}.png"
            plot_series(records, series, path, log, Y_LABELS[suffix], TITLE_NOTES[suffix])


def plot_loss(records: list[dict[str, Any]], events: list[dict[str, Any]], path: Path) -> None:
    """Train and val losses against step; vertical lines where the guard acted. Losses of
    steps the guard dropped are markers, never part of a line (nor of its smoothing), and the
    y axis spans the healthy values only: a dropped loss off that scale (a x100 spike, NaN)
    sits on the top edge with its value written beside it."""
    fig, (ax,) = new_figure(8, 4.5)
    keys = sorted({k for r in records for k in r})
    dropped = {e["step"] for e in events if e.get("kind") in IN_STEP_KINDS}
    colors = iter(["tab:blue", "tab:orange", "tab:purple", "tab:brown"])
    healthy: list[float] = []
    off_curve: list[tuple[int, float, str]] = []  # (step, loss, color) of dropped steps
    for key in [k for k in keys if k.startswith("train/") and k.endswith("loss")]:
        steps, values = _series(records, key)
        color = next(colors, "tab:gray")
        kept = [(s, v) for s, v in zip(steps, values) if s not in dropped and math.isfinite(v)]
        off_curve += [(s, v, color) for s, v in zip(steps, values) if s in dropped]
        if kept:
            healthy += [v for _, v in kept]
            ax.plot(*zip(*kept), color=color, alpha=0.3, lw=0.8)
            ax.plot(*zip(*_smooth(kept)), color=color, lw=1.6, label=f"{key} (smoothed)")
    for key, color in (("val/loss", "tab:green"), ("val_original/loss", "tab:red")):
        vsteps, val = _series(records, key)
        if vsteps:
            healthy += [v for v in val if math.isfinite(v)]
            label = key if key == "val/loss" else f"{key} (original data: forgetting)"
            ax.plot(vsteps, val, "o-", color=color, lw=1.6, ms=3, label=label)
    clipped = _mark_dropped(ax, off_curve, healthy)
    labelled = set()
    for e in events:
        color = EVENT_COLORS.get(e.get("action"), "black")
        label = e["action"] if e["action"] not in labelled else None
        labelled.add(e["action"])
        ax.axvline(e["step"], color=color, ls="--", lw=0.9, alpha=0.8, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    title = "loss (dashed lines: stability guard actions)" if events else "loss"
    if clipped:
        title += (
            "\ny axis clipped to healthy losses; ▲ on the top edge: a dropped step off the scale"
        )
    ax.set_title(title, fontsize=10 if clipped else None)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)  # "best" keeps clear of the dropped-step markers
    save_figure(fig, path)


def _mark_dropped(ax, points: list[tuple[int, float, str]], healthy: list[float]) -> bool:
    """Markers for the losses of dropped steps; the axis spans the healthy losses, and a
    dropped loss beyond it is drawn on the top edge with its value. True when one was."""
    if healthy:
        lo, hi = min(healthy), max(healthy)
        pad = 0.05 * (hi - lo) or 0.05 * abs(hi) or 0.05
        ax.set_ylim(lo - pad, hi + pad)
    top = ax.get_ylim()[1]
    clipped, labelled = False, False
    for step, value, color in points:
        inside = math.isfinite(value) and value <= top
        y = value if inside else top
        label = None if labelled else "loss of a dropped step"
        labelled = True
        ax.plot([step], [y], marker="x" if inside else "^", color=color, ms=8, mew=2,
                ls="none", label=label, clip_on=False)  # fmt: skip
        if not inside:
            clipped = True
            ax.annotate(f"{value:.3g}", (step, y), textcoords="offset points", xytext=(4, -10),
                        fontsize=7, color=color)  # fmt: skip
    return clipped


def plot_series(
    records: list[dict[str, Any]],
    keys: list[str],
    path: Path,
    log: bool = False,
    ylabel: str = "",
    note: str = "",
) -> None:
    fig, (ax,) = new_figure(8, 3)
    positive = True
    for key in keys:
        steps, vals = _series(records, key)
        ax.plot(steps, vals, lw=1.0, label=key)
        positive = positive and all(v > 0 for v in vals if math.isfinite(v))
    if log and positive:
        plain_log_ticks(ax)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    notes = ", ".join(n for n in (note, "log scale" if log and positive else "") if n)
    ax.set_title(", ".join(keys) + (f" ({notes})" if notes else ""))
    if len(keys) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in records if key in r and r[key] is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _smooth(points: list[tuple[int, float]], alpha: float = 0.1) -> list[tuple[int, float]]:
    out, ema = [], None
    for s, v in points:
        ema = v if ema is None else (1 - alpha) * ema + alpha * v
        out.append((s, ema))
    return out
