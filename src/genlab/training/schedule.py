"""Learning-rate schedule: linear warmup, then cosine / linear / constant decay.

The schedule is a pure function of the number of *applied* optimizer updates, so a skipped
step (the guard refused it) does not advance it, and a rollback rewinds it with the weights."""

from __future__ import annotations

import math

from genlab.config import ScheduleConfig


def lr_factor(updates: int, cfg: ScheduleConfig, total: int) -> float:
    """Multiplier of the base lr after `updates` applied updates out of `total` planned."""
    if cfg.warmup_steps > 0 and updates < cfg.warmup_steps:
        return (updates + 1) / cfg.warmup_steps
    if cfg.decay == "constant":
        return 1.0
    span = max(1, total - cfg.warmup_steps)
    progress = min(1.0, (updates - cfg.warmup_steps) / span)
    if cfg.decay == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:  # linear
        shape = 1.0 - progress
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape
