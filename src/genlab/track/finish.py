"""The end of every command that writes a run or a study (train, resume, eval, tune): its
report.html (`track.report`, on by default) and its files in MLflow (`track.mlflow`).
Neither may fail the command: whatever goes wrong here is one warning line, and a tracking
server that does not answer is waited for at most `TIMEOUT_S`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genlab.errors import first_line

if TYPE_CHECKING:
    from rich.console import Console

    from genlab.config import TrackConfig

TIMEOUT_S = 120.0


def _warn(console: Console | None, message: str) -> None:
    if console is not None:
        console.print(f"[yellow]track[/]: {message}")


def _bounded(fn: Callable[[], Any], what: str, console: Console | None) -> None:
    """`fn()` on a daemon thread, waited for at most TIMEOUT_S; failures become warnings."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            fn()
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=work, name="genlab-finish", daemon=True)
    thread.start()
    thread.join(TIMEOUT_S)
    if thread.is_alive():
        _warn(console, f"{what} did not finish within {TIMEOUT_S:.0f}s; left behind")
    elif errors:
        _warn(console, f"{what} failed: {first_line(errors[0])[:240]}")


def write_report_safely(path: Path, console: Console | None) -> Path | None:
    """report.html for a run or study directory; a failure is a warning, never an error."""
    from genlab.track.report import write_report

    try:
        return write_report(path)
    except Exception as exc:
        _warn(console, f"report.html not written: {first_line(exc)[:240]}")
        return None


def track_config(run_dir: Path) -> TrackConfig | None:
    """The `track:` section of a run's config.yaml (None when it cannot be read)."""
    from genlab import config
    from genlab.track.rundir import RunDir

    try:
        return config.load(RunDir(Path(run_dir)).config).track
    except Exception:
        return None


def finish_run(run_dir: str | Path, console: Console | None = None) -> None:
    """After train, resume or eval of the run in `run_dir`."""
    from genlab.track.rundir import RunDir

    track = track_config(Path(run_dir))
    if track is None:
        return
    if track.report:
        write_report_safely(Path(run_dir), console)
    if track.mlflow is not None:
        from genlab.track.mlflow_sink import attach_outputs

        _bounded(lambda: attach_outputs(RunDir(Path(run_dir))), "MLflow upload", console)
