"""The before/after table of `genlab compress`: `compression.json`, the console table and
`plots/compression.png` (the main quality metric against file size and against speed).

One row per model (the original first), each a flat dict:

    name, method, params, nonzero_params, sparsity, quantized_layers, kept,
    file_mb                 the checkpoint's weight file(s) of the compressed module
    weights_mb, peak_mb     in memory / peak RSS above the process's start (measure.py)
    forward_b1_tokens_per_s, forward_b8_tokens_per_s, generate_tokens_per_s   (LMs)
    samples_per_s                                                             (VAE, GAN)
    val/perplexity, val/bits_per_byte, test/...   (LMs)
    val/elbo, val/recon_mse, val/fid, val/kid, test/...   (VAE; GAN: fid, kid)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from genlab.fileio import atomic_write_text

TABLE_FILE = "compression.json"
PLOT_FILE = "compression.png"
SIZE_COLUMNS = ("params", "nonzero_params", "file_mb", "weights_mb", "peak_mb")
SPEED_COLUMNS = (
    "forward_b1_tokens_per_s",
    "forward_b8_tokens_per_s",
    "generate_tokens_per_s",
    "samples_per_s",
)
HEADERS = {
    "params": "params",
    "nonzero_params": "non-zero",
    "file_mb": "file MB",
    "weights_mb": "weights MB",
    "peak_mb": "peak MB",
    "forward_b1_tokens_per_s": "fwd b1 tok/s",
    "forward_b8_tokens_per_s": "fwd b8 tok/s",
    "generate_tokens_per_s": "gen tok/s",
    "samples_per_s": "samples/s",
}


def quality_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The `split/metric` keys of the rows, val first, in first-seen order."""
    keys: list[str] = []
    for row in rows:
        for k in row:
            if "/" in k and not k.endswith("/tokens") and k not in keys:
                keys.append(k)
    return sorted(keys, key=lambda k: (not k.startswith("val/"), keys.index(k)))


def write_table(
    out_dir: Path, rows: Sequence[dict[str, Any]], extra: dict[str, Any], main_metric: str
) -> Path:
    """compression.json and plots/compression.png in `out_dir`; returns the JSON path."""
    path = Path(out_dir) / TABLE_FILE
    doc = {"rows": [_jsonable(r) for r in rows], "main_metric": main_metric, **extra}
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    plot_table(rows, main_metric, Path(out_dir) / "plots" / PLOT_FILE)
    return path


def read_table(out_dir: Path) -> dict[str, Any]:
    return json.loads((Path(out_dir) / TABLE_FILE).read_text(encoding="utf-8"))


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()
    }


def print_table(rows: Sequence[dict[str, Any]], console: Console, title: str = "") -> None:
    """Two tables, size and speed, then quality, one line per model. Written to a file or
    pipe (no terminal width), they are printed at the width they need."""
    size_speed = [c for c in (*SIZE_COLUMNS, *SPEED_COLUMNS) if any(c in r for r in rows)]
    for i, columns in enumerate((size_speed, quality_columns(rows))):
        table = Table(title=(title or None) if i == 0 else None, title_justify="left")
        table.add_column("model", no_wrap=True)
        for c in columns:
            table.add_column(HEADERS.get(c, c), justify="right", no_wrap=True)
        for row in rows:
            table.add_row(row["name"], *(_fmt(c, row.get(c)) for c in columns))
        if console.is_terminal:
            console.print(table)
        else:
            Console(file=console.file, width=30 + 15 * len(columns)).print(table)


def _fmt(column: str, value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if column in ("params", "nonzero_params"):
        return f"{int(value):,}"
    if column in SPEED_COLUMNS:
        return f"{value:,.0f}"
    if column.endswith("_mb"):
        return f"{value:.2f}"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def plot_table(rows: Sequence[dict[str, Any]], main_metric: str, path: Path) -> None:
    """Quality (the main metric) against file size and against speed, one point per row."""
    from genlab.track.figures import new_figure, save_figure

    speeds = [c for c in ("forward_b8_tokens_per_s", "samples_per_s") if rows and c in rows[0]]
    speed = speeds[0] if speeds else None
    panels = [("file_mb", "weights file (MB)")]
    if speed is not None:
        panels.append((speed, HEADERS[speed]))
    fig, axes = new_figure(5.5 * len(panels), 4.2, ncols=len(panels))
    for ax, (x_key, x_label) in zip(axes, panels, strict=True):
        for row in rows:
            x, y = row.get(x_key), row.get(main_metric)
            if not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
                continue
            original = row["name"] == "original"
            ax.scatter([x], [y], s=40, color="black" if original else "tab:blue", zorder=3)
            ax.annotate(row["name"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(x_label)
        ax.set_ylabel(main_metric)
        ax.grid(alpha=0.3)
    fig.suptitle("genlab compress: quality vs size and speed")
    save_figure(fig, path)


__all__ = ["PLOT_FILE", "TABLE_FILE", "plot_table", "print_table", "read_table", "write_table"]
