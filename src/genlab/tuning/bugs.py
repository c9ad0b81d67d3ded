"""Trials that fail because of genlab itself, not because of the parameters they tried.

A user error (`GenlabError`: these parameters make a bad config or too little data), a guard
abort and running out of memory are what a search meets on the way: the trial fails and the
study goes on. Any other exception is a bug in genlab (or in a library it calls), and a tuner
that turned it into one more failed trial would hide it behind a plausible search. So a bug's
full traceback goes to `<study_dir>/errors/<name>.txt`, named in the trial's `error_file` user
attr (and trials.csv, or the final stage's results.json), and the study stops at its second bug
with `StudyBug` (exit code 1): one may be a fluke of one config, two are worth a report before
more compute is spent on them.

The count is the study's, read from the storage (search trials) and `final/results.json`, so N
worker processes, or several machines sharing one database, count the same bugs. A study only
stops for a bug of the current `genlab tune` call: resuming a study that stopped runs again
until it meets a bug, so a fixed genlab carries on where the broken one stopped.
"""

from __future__ import annotations

import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

from genlab.errors import GenlabError, GuardAbort

ERRORS_DIR = "errors"
ERROR_FILE = "error_file"  # user attr / trials.csv column / results.json key
MAX_BUGS = 2  # the study stops at this many


class StudyBug(Exception):
    """The study stopped: genlab failed unexpectedly `MAX_BUGS` times (the CLI exits 1)."""


def is_bug(exc: BaseException) -> bool:
    """False for what a trial may legitimately run into; True for anything else."""
    import torch

    expected = (GenlabError, GuardAbort, MemoryError, torch.OutOfMemoryError)
    return not isinstance(exc, expected)


def write_traceback(study_dir: Path, name: str, exc: BaseException, context: str) -> str:
    """Write `context` and the full traceback of `exc` to errors/<name>.txt; return that path
    relative to the study dir (what the trial's row names)."""
    from genlab import __version__

    relative = f"{ERRORS_DIR}/{name}.txt"
    path = study_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(traceback.format_exception(exc))
    path.write_text(f"genlab {__version__}: {context}\n\n{text}", encoding="utf-8")
    return relative


def search_bugs(study: Any) -> list[Any]:
    """The study's trials that failed on a bug (frozen trials, by number)."""
    return [t for t in study.get_trials(deepcopy=False) if ERROR_FILE in t.user_attrs]


def search_bug_files(study: Any) -> list[str]:
    """The traceback files of the study's search trials that failed on a bug."""
    return [str(t.user_attrs[ERROR_FILE]) for t in search_bugs(study)]


def final_bug_files(results: dict[str, Any]) -> list[str]:
    """The traceback files of the final stage's re-runs that failed on a bug."""
    return [str(r[ERROR_FILE]) for r in results.values() if ERROR_FILE in r]


def search_should_stop(study: Any, started: datetime, final_files: list[str]) -> list[str]:
    """The study's traceback files when a search trial of this call (started at or after
    `started`) failed on a bug and the study has `MAX_BUGS` of them; else []."""
    trials = search_bugs(study)
    new = any(t.datetime_start is not None and t.datetime_start >= started for t in trials)
    files = [str(t.user_attrs[ERROR_FILE]) for t in trials] + final_files
    return files if new and len(files) >= MAX_BUGS else []


def stop_message(study_dir: Path, files: list[str]) -> str:
    shown = ", ".join(str(study_dir / f) for f in files[:4])
    more = f" (+{len(files) - 4} more)" if len(files) > 4 else ""
    return (
        f"genlab failed unexpectedly in {len(files)} runs of this study, which is a bug in "
        f"genlab, not a problem with the config; the study stopped. Tracebacks: {shown}{more}. "
        "Please report them; once fixed, the same command resumes the study."
    )
