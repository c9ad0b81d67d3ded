"""`MetricResult`: one evaluated number plus what is needed to trust and reproduce it.

Every metric that `genlab eval` reports is turned into a `MetricResult`, so `metrics.json`
records not only the value but the split it was measured on, how many samples (tokens,
sentences, images) went into it, and the settings that make it comparable across runs
(sacrebleu's signature for BLEU/chrF, the feature extractor's name and content hash for FID).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from genlab.errors import ConfigError


@dataclass(frozen=True)
class MetricResult:
    """One metric value.

    name: metric name as written to metrics.json (e.g. "perplexity", "bleu", "fid").
    value: the number (NaN/inf are kept, never hidden: they are written as JSON strings).
    n: how many samples it was computed on (tokens for perplexity, sentences for BLEU, ...).
    split: the data split ("val", "test", ...), or None when not tied to a split.
    details: JSON-able settings needed to reproduce or compare it (signature, extractor hash).
    """

    name: str
    value: float
    n: int
    split: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict. Non-finite values become the strings "nan", "inf", "-inf"
        because strict JSON has no such numbers and silently dropping them would hide a fault."""
        value: float | str = float(self.value)
        if not math.isfinite(value):
            value = str(value)
        return {
            "name": self.name,
            "value": value,
            "n": int(self.n),
            "split": self.split,
            "details": dict(self.details),
        }


def parse_metric_names(
    metrics: str | Sequence[str] | None, known: Sequence[str], default: Sequence[str]
) -> list[str]:
    """Metric names from a list or a comma-separated string, checked against `known` before
    anything is computed (None: `default`). Order kept, repeats dropped."""
    if metrics is None:
        return list(default)
    names = metrics.split(",") if isinstance(metrics, str) else [str(m) for m in metrics]
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        shown = ", ".join(repr(n[:40]) for n in (unknown or names)[:5]) or "none"
        raise ConfigError(
            f"unknown metric name(s) {shown} in --metrics; choose from {','.join(known)} "
            f"(e.g. --metrics {','.join(default[:2])})"
        )
    return list(dict.fromkeys(names))
