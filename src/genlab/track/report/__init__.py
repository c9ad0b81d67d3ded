"""report.html: one self-contained page for a run, a tuning study, or a comparison of runs
(inline CSS, JS, images and plotly.js; it opens from a file:// URL with no network).

    write_report("runs/lm")                     # runs/lm/report.html
    write_report("studies/tune-lm")             # the study's page
    write_comparison(["runs/a", "runs/b"], "compare.html")
"""

from __future__ import annotations

from pathlib import Path

from genlab.errors import RunDirError
from genlab.fileio import require_writable

REPORT_FILE = "report.html"


def is_study_dir(path: Path) -> bool:
    return any((path / name).exists() for name in ("trials.csv", "study.db", "journal.log"))


def write_report(path: str | Path, out: str | Path | None = None) -> Path:
    """The report of a run directory or a study directory, written to `out` (default
    PATH/report.html); returns where it went."""
    from genlab.track.runs import is_run_dir

    path = Path(path)
    target = Path(out) if out is not None else path / REPORT_FILE
    if target.is_dir():
        target = target / REPORT_FILE
    require_writable(target.parent, "--out", given=out is not None)  # before the page is drawn
    if is_run_dir(path):
        from genlab.track.report.run_page import write_run_report

        return write_run_report(path, target)
    if path.is_dir() and is_study_dir(path):
        from genlab.track.report.study_page import write_study_report

        return write_study_report(path, target)
    kind = "does not exist" if not path.exists() else "is neither a run nor a study directory"
    raise RunDirError(
        f"{str(path)!r} {kind}; pass a run directory (config.yaml + metrics.jsonl, e.g. "
        "runs/lm; or a compressed run) or a study directory (trials.csv, e.g. studies/tune-lm)"
    )


def write_comparison(paths: list[str | Path], out: str | Path = "compare.html") -> Path:
    """compare.html for two or more runs; returns where it went."""
    from genlab.track.report.compare_page import write_compare_report

    target = Path(out)
    if target.is_dir():
        target = target / "compare.html"
    require_writable(target.parent, "--out")  # before the page is drawn
    return write_compare_report([Path(p) for p in paths], target)


__all__ = ["REPORT_FILE", "is_study_dir", "write_comparison", "write_report"]
