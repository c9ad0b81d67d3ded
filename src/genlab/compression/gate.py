"""The quality gate (`compress.max_quality_loss`): a compressed model may lose at most that
share of the family's main metric (LM: val perplexity; VAE: val ELBO; GAN: val FID), relative
to the original. When a setting loses more, units fall back one by one, most sensitive first
(kept in full precision / left unpruned), until it passes:

1. measure the full setting; pass if within the budget;
2. measure each unit alone (only that layer quantized, or only that unit pruned, without
   recovery): its *sensitivity*;
3. keep the k most sensitive units uncompressed, k = 1, 2, 3, ... (k = 1, 2, 4, ... when each
   attempt re-runs recovery fine-tuning), until the loss is within the budget.

If even keeping all units but one fails, the gate gives up: exit 2 with the loss measured and
what to change. Every attempt is reported (compression.json "gate").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from genlab.errors import GenlabError


class QualityGateError(GenlabError):
    """The compressed model loses more quality than compress.max_quality_loss allows."""


@dataclass(frozen=True)
class GateUnit:
    """A unit the gate can keep uncompressed: a pruned unit or a quantized layer."""

    kind: str  # "prune" | "quantize"
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass
class GateResult:
    passed: bool
    loss: float  # relative loss of the accepted (or last) attempt
    kept: list[GateUnit] = field(default_factory=list)  # left uncompressed
    sensitivity: dict[str, float] = field(default_factory=dict)
    attempts: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "loss": self.loss,
            "kept": [str(u) for u in self.kept],
            "sensitivity": self.sensitivity,
            "attempts": self.attempts,
        }


def relative_loss(before: float, after: float, higher_is_better: bool) -> float:
    """How much worse `after` is than `before`, as a share of |before| (negative: better)."""
    if not math.isfinite(after):
        return math.inf
    worse = before - after if higher_is_better else after - before
    return worse / max(abs(before), 1e-12)


def fallback_counts(n: int, doubling: bool) -> list[int]:
    """How many units each fallback attempt keeps uncompressed (always fewer than n)."""
    if not doubling:
        return list(range(1, n))
    counts, k = [], 1
    while k < n:
        counts.append(k)
        k *= 2
    if counts and counts[-1] != n - 1 and n > 1:
        counts.append(n - 1)
    return counts


def run_gate(
    units: Sequence[GateUnit],
    measure: Callable[[list[GateUnit]], float],
    probe: Callable[[GateUnit], float],
    max_loss: float,
    doubling: bool = False,
    say: Callable[[str], None] = lambda _: None,
) -> GateResult:
    """Find the fewest most-sensitive units to keep so that measure(kept) <= max_loss.

    measure(kept): relative loss of the setting with `kept` uncompressed; probe(unit):
    relative loss with only `unit` compressed."""
    loss = measure([])
    attempts = [{"kept": 0, "loss": loss}]
    if loss <= max_loss:
        return GateResult(True, loss, [], {}, attempts)
    say(f"gate: loss {loss:.2%} > {max_loss:.2%}; measuring {len(units)} units one by one")
    sensitivity = {str(u): probe(u) for u in units}
    order = sorted(units, key=lambda u: sensitivity[str(u)], reverse=True)
    for k in fallback_counts(len(order), doubling):
        loss = measure(order[:k])
        attempts.append({"kept": k, "loss": loss})
        say(f"gate: keeping {k} most sensitive uncompressed: loss {loss:.2%}")
        if loss <= max_loss:
            return GateResult(True, loss, order[:k], sensitivity, attempts)
    least = order[-1] if order else None
    alone = f"; {least} alone costs {sensitivity[str(least)]:.2%}" if least else ""
    raise QualityGateError(
        f"compress.max_quality_loss={max_loss:g} cannot be met: the setting loses "
        f"{attempts[0]['loss']:.2%}, and {loss:.2%} even with {len(order) - 1} of {len(order)} "
        f"units kept{alone}; raise compress.max_quality_loss, lower compress.prune.sparsity, "
        "add compress.recover_steps or pick a milder compress.quantize"
    )


__all__ = [
    "GateResult",
    "GateUnit",
    "QualityGateError",
    "fallback_counts",
    "relative_loss",
    "run_gate",
]
