"""Every PNG genlab draws goes through here: a matplotlib Figure on the Agg canvas, without
pyplot (pyplot adds ~0.2 s of imports and a global figure registry a library must not leak
into), laid out once and written to a file.

The plots are drawn at the end of every `genlab train` and `resume`, so their cost is part of
every run's start-to-finish time: measured (benchmarks/plot_speed.py) the three run plots cost
~0.7 s through pyplot + tight_layout + mathtext log ticks, and ~0.25 s here. What is saved:
- no tight_layout: it draws every text once more to measure it; the fixed margins below fit a
  one- or two-line title, tick labels of up to 7 characters and a label on each axis;
- log axes label their ticks as plain numbers (1e-03, 0.1), not with mathtext (10^-3), whose
  parser costs ~0.25 s to build in each process.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter

DPI = 110


def new_figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list[Axes]]:
    """A `width` x `height` inch figure with `ncols` axes side by side, on its own Agg canvas."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


class PlainLogFormatter(LogFormatter):
    """matplotlib's log-axis labelling (which ticks get a label: the decades, and some minor
    ticks when the axis spans few decades), written as plain numbers: 0.06, 1, 2e+04.
    `_num_to_string` is the one place LogFormatter turns a tick value into text."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return f"{x:.4g}"


def plain_log_ticks(ax: Axes, which: str = "y") -> None:
    """Put `ax`'s `which` ("x" or "y") axis on a log scale whose tick labels are plain
    numbers (no mathtext)."""
    if which == "y":
        ax.set_yscale("log")
    else:
        ax.set_xscale("log")
    axis = ax.yaxis if which == "y" else ax.xaxis
    axis.set_major_formatter(PlainLogFormatter())
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))


def save_figure(fig: Figure, path: Path, dpi: int = DPI) -> Path:
    """Lay `fig` out with margins that fit its titles and labels, write it as a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, format="png")
    return path
