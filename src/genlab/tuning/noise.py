"""Is the search's signal stronger than its noise? The study summary says.

A short training run's metric moves with the seed (init, data order) and, with CV, the fold.
What matters for ranking configurations is not how much a fold or a seed shifts every trial
alike (that cancels), but how much a configuration's value moves relative to the others from
one run to the next: the residual of the configs x runs table once each config's and each
run's mean are removed (two-way ANOVA without replication). With R runs per trial, a trial's
value (their mean) carries that noise / sqrt(R).

Where it is measured: trials with several runs (tune.seeds, tune.cv.folds), else the final
stage's re-runs on fresh seeds (one run per search trial), else not at all (and the summary
says how to measure it). The signal is how far apart the best `TOP` trials are; when that
spread is below the noise of the difference of two trial values, their order is mostly chance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

TOP = 5


@dataclass(frozen=True)
class NoiseCheck:
    noise: float | None  # sd of a trial's value from run-to-run noise (None: not measured)
    spread: float | None  # best-to-TOPth-best gap of the trial values
    top: int  # how many best trials the spread covers
    source: str  # where the noise was measured

    @property
    def weak(self) -> bool:
        """The best trials differ by less than the noise of a difference of two values."""
        if self.noise is None or self.spread is None:
            return False
        return self.spread < math.sqrt(2) * self.noise

    def line(self, metric: str) -> str:
        if self.spread is None:
            return ""
        if self.noise is None:
            return (
                f"noise: not measured (one run per trial); tune.seeds: 2 (or tune.cv.folds, or "
                f"tune.final.top_k) shows whether the best {self.top} trials, "
                f"{self.spread:.3g} apart in {metric}, differ by more than chance"
            )
        head = (
            f"noise: a trial's {metric} moves ±{self.noise:.3g} from run to run ({self.source}); "
            f"the best {self.top} trials are {self.spread:.3g} apart"
        )
        if self.weak:
            return (
                f"{head}: weaker than the noise, so their order is mostly chance; average more "
                "runs per trial (tune.seeds, tune.cv.folds) or re-run the top ones "
                "(tune.final.top_k) before trusting the winner"
            )
        return f"{head}: stronger than the noise"


def residual_sd(table: np.ndarray) -> float | None:
    """Config x run interaction sd of a (configs, runs) table; None below 2 x 2."""
    n, r = table.shape
    if n < 2 or r < 2:
        return None
    resid = table - table.mean(0, keepdims=True) - table.mean(1, keepdims=True) + table.mean()
    return float(math.sqrt((resid**2).sum() / ((n - 1) * (r - 1))))


def check_noise(complete: list[Any], final_rows: list[Any], direction: str) -> NoiseCheck:
    """`complete`: the study's complete trials (any order); `final_rows`: the final stage's
    genlab.tuning.final.FinalRow list (maybe empty)."""
    values = sorted(float(t.value) for t in complete)
    if direction == "maximize":
        values.reverse()
    top = min(TOP, len(values))
    spread = abs(values[top - 1] - values[0]) if top >= 2 else None
    noise, source = _from_trials(complete)
    if noise is None:
        noise, source = _from_final(final_rows)
    return NoiseCheck(noise, spread, top, source)


def _from_trials(complete: list[Any]) -> tuple[float | None, str]:
    runs = [t.user_attrs.get("values", {}) for t in complete]
    names = sorted(set().union(*runs)) if runs else []
    full = [[r[k] for k in names] for r in runs if all(k in r for k in names)]
    if len(names) < 2 or len(full) < 2:
        return None, ""
    sd = residual_sd(np.asarray(full, dtype=float))
    return (
        (None, "")
        if sd is None
        else (
            sd / math.sqrt(len(names)),
            f"{len(full)} trials x {len(names)} runs; each trial averages {len(names)}",
        )
    )


def _from_final(rows: list[Any]) -> tuple[float | None, str]:
    width = min((len(r.values) for r in rows), default=0)
    full = [r.values[:width] for r in rows if r.values]
    if width < 2 or len(full) < 2:
        return None, ""
    sd = residual_sd(np.asarray(full, dtype=float))
    if sd is None:
        return None, ""
    return sd, f"final stage: {len(full)} configs x {width} fresh seeds; one run per trial"
