"""The final stage: re-run the top-k configs on fresh seeds and pick the winner by the mean.

A search's best value is optimistically biased (it is the best of many noisy draws), so the
winner is chosen on seeds the search never saw: `base_seed + 10_000 + i` (search runs use
`base_seed + i`, i < tune.seeds). Each result is saved to `final/results.json` as soon as it
exists, so re-running the command resumes the final stage too. A re-run that failed on a bug in
genlab (genlab.tuning.bugs) keeps its traceback file there, counts towards the study's bugs, and
runs again next time.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from genlab.errors import GuardAbort
from genlab.tuning.bugs import (
    ERROR_FILE,
    MAX_BUGS,
    StudyBug,
    final_bug_files,
    is_bug,
    stop_message,
    write_traceback,
)
from genlab.tuning.objective import RunSpec, abort_reason, one_line, run_config
from genlab.tuning.schema import TuneConfig
from genlab.tuning.space import SearchSpace

FRESH_SEED_OFFSET = 10_000


@dataclass
class FinalRow:
    """One re-run config: its values on the fresh seeds, mean and 95% CI half-width."""

    trial: int
    params: dict[str, Any]
    values: list[float]
    failures: list[str] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def ci95(self) -> float:
        """Half-width of the t-distribution 95% CI of the mean (nan with fewer than 2 runs)."""
        n = len(self.values)
        if n < 2:
            return math.nan
        from scipy import stats

        sem = float(np.std(self.values, ddof=1)) / math.sqrt(n)
        return float(stats.t.ppf(0.975, n - 1)) * sem


def fresh_seeds(base_seed: int, n: int) -> list[int]:
    return [base_seed + FRESH_SEED_OFFSET + i for i in range(n)]


def run_final(
    trials: list[Any],
    space: SearchSpace,
    tune: TuneConfig,
    base_seed: int,
    study_dir: Path,
    console: Console,
    search_bug_files: list[str] | None = None,
) -> list[FinalRow]:
    """Re-run the best `tune.final.top_k` of `trials` (complete, best first) on fresh seeds.

    `search_bug_files`: the study's search trials that failed on a bug; with the final stage's
    own, a bug here that makes `MAX_BUGS` of them raises StudyBug."""
    from genlab.training.loop import train

    out_dir = study_dir / "final"
    out_dir.mkdir(parents=True, exist_ok=True)
    store = out_dir / "results.json"
    done: dict[str, Any] = json.loads(store.read_text()) if store.is_file() else {}
    quiet = Console(quiet=True)
    rows = []
    for t in trials[: tune.final.top_k]:
        row = FinalRow(t.number, dict(t.params), [])
        for seed in fresh_seeds(base_seed, tune.final.seeds):
            key = f"{t.number}-seed{seed}"
            if key not in done or ERROR_FILE in done[key]:
                console.print(f"final: trial {t.number}, seed {seed}")
                run_dir = out_dir / key
                try:
                    cfg = run_config(space, row.params, RunSpec(None, seed), 0)
                    result = train(cfg, run_dir, overwrite=True, console=quiet)
                    value = result.final_metrics.get(tune.metric, math.nan)
                    done[key] = {"value": value} if math.isfinite(value) else {"failure": "nan"}
                except GuardAbort:
                    done[key] = {"failure": abort_reason(run_dir)}
                except Exception as exc:  # one failed re-run must not lose the others
                    done[key] = _failure(exc, study_dir, t.number, seed)
                if not tune.keep_checkpoints:
                    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
                store.write_text(json.dumps(done, indent=1))
                if ERROR_FILE in done[key]:
                    files = [*(search_bug_files or []), *final_bug_files(done)]
                    if len(files) >= MAX_BUGS:
                        raise StudyBug(stop_message(study_dir, files))
            if "value" in done[key]:
                row.values.append(float(done[key]["value"]))
            else:
                row.failures.append(f"seed {seed}: {done[key]['failure']}")
        rows.append(row)
    return rows


def _failure(exc: Exception, study_dir: Path, trial: int, seed: int) -> dict[str, str]:
    """The results.json entry of a failed re-run; a bug's traceback goes to a file."""
    if not is_bug(exc):
        return {"failure": one_line(exc)}
    name = f"final-{trial:04d}-seed{seed}"
    relative = write_traceback(study_dir, name, exc, f"final re-run of trial {trial}, seed {seed}")
    return {"failure": f"bug: {one_line(exc)}; traceback in {relative}", ERROR_FILE: relative}


def pick_winner(rows: list[FinalRow], direction: str) -> FinalRow | None:
    scored = [r for r in rows if r.values]
    if not scored:
        return None
    sign = 1.0 if direction == "minimize" else -1.0
    return min(scored, key=lambda r: sign * r.mean)
