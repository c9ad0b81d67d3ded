"""One self-contained HTML page: Jinja2 templates, inline CSS and JS, plotly.js inlined once,
figures as JSON, images as data: URIs. The page opens from a file:// URL with no network.

Templates call `plot(figure)` where a figure goes: it returns the figure's placeholder and
keeps the figure, and base.html.j2 writes them all, after the content, as one JSON block that
page.js hands to Plotly. Every string a template shows is escaped (autoescape): sample text
and config values can hold anything.
"""

from __future__ import annotations

import base64
import json
import math
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from genlab import __version__
from genlab.errors import require
from genlab.fileio import atomic_write_text
from genlab.track.fmt import number, seconds

PLOT_CONFIG = {"displaylogo": False, "responsive": True}


@cache
def _environment() -> Any:
    jinja2 = require("jinja2", "track")
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("genlab.track.report", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["number"] = number
    env.filters["seconds"] = seconds
    return env


def _static(name: str) -> str:
    return resources.files("genlab.track.report").joinpath("templates", name).read_text("utf-8")


def strict_json(value: Any) -> Any:
    """JSON-safe data: NaN and inf become null (a gap in a curve), numpy scalars and arrays
    plain numbers and lists."""
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # numpy arrays and scalars (Optuna's figures hold them)
        return strict_json(value.tolist())
    return str(value)


def script_json(value: Any) -> str:
    """JSON to sit inside <script>: `<` escaped, so no string in it can close the tag."""
    return json.dumps(strict_json(value), separators=(",", ":")).replace("<", "\\u003c")


def data_uri(path: Path) -> str:
    """A PNG inline (images stay in the page: no file next to it is needed)."""
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:image/png;base64,{encoded}"


class Page:
    """Collects the figures of one page as its template renders, then writes the file."""

    def __init__(self, kind: str, title: str):
        self.kind = kind  # "run report", "study report", "comparison"
        self.title = title
        self.figures: list[dict[str, Any]] = []

    def plot(self, figure: Any, height: int = 340) -> Any:
        """The placeholder of `figure` (a plotly figure dict or Figure) and keep it."""
        from markupsafe import Markup

        spec = figure.to_plotly_json() if hasattr(figure, "to_plotly_json") else dict(figure)
        layout = {"height": height, **spec.get("layout", {})}
        self.figures.append({"data": spec.get("data", []), "layout": layout})
        return Markup(f'<div class="figure" id="figure-{len(self.figures) - 1}"></div>')

    def render(self, template: str, **context: Any) -> str:
        from markupsafe import Markup

        plotly = require("plotly.offline", "track")
        env = _environment()
        return env.get_template(template).render(
            kind=self.kind,
            title=self.title,
            version=__version__,
            plot=self.plot,
            figures=lambda: Markup(script_json(self.figures)),
            plot_config=Markup(script_json(PLOT_CONFIG)),
            style=Markup(_static("style.css")),
            script=Markup(_static("page.js")),
            plotly_js=Markup(plotly.get_plotlyjs()),
            **context,
        )

    def write(self, out: Path, template: str, **context: Any) -> Path:
        """Render and write atomically (a crash leaves the old page or the new one)."""
        atomic_write_text(out, self.render(template, **context))
        return out
