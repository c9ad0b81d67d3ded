"""States a run can roll back to: the guard's rollback rung restores the last healthy one.

A snapshot is taken at each checkpoint step, before the save (a copy made while the writer
thread serializes would compete with it for the GIL). It holds, in memory, everything the
next steps change: the weights, the optimizers' state, the family's state (sampler position,
skipped sample ids), the RNG states and the guard's windows. With `guard.memory_snapshot`
off it holds only the checkpoint's path, and a rollback reads the checkpoint back
(`from_checkpoint`). Tensors stay on the device they live on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genlab.training.checkpoint_writer import clone_state
from genlab.training.family import Family
from genlab.training.guard import Guard
from genlab.training.runtime import rng_state, set_rng_state


@dataclass
class Snapshot:
    """A state the run can return to: in memory (`modules` set) or on disk only (`path`)."""

    step: int
    updates: int
    kept_seconds: float
    modules: dict[str, dict[str, torch.Tensor]] | None = None
    optimizers: dict[str, Any] | None = None
    family: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    path: Path | None = None
    guard_windows: dict[str, tuple[list[float], list[float]]] | None = None


def _weights(family: Family) -> dict[str, dict[str, torch.Tensor]]:
    return {
        k: {n: t.detach().clone() for n, t in m.state_dict().items()}
        for k, m in family.modules.items()
    }


def take(
    counters: tuple[int, int, float],
    family: Family,
    optimizers: dict[str, torch.optim.Optimizer],
    guards: dict[str, Guard],
    path: Path | None,
    in_memory: bool = True,
) -> Snapshot:
    """The run's state now; `counters` = (step, updates, kept_seconds). Without `in_memory`
    (and with a `path`), only what a rollback cannot read back from the checkpoint."""
    snap = Snapshot(*counters, path=path)
    snap.guard_windows = {k: g.windows() for k, g in guards.items()}
    if in_memory or path is None:
        snap.modules = _weights(family)
        snap.optimizers = {k: clone_state(o.state_dict()) for k, o in optimizers.items()}
        snap.family = clone_state(family.state_dict())
        snap.rng = rng_state()
    return snap


def from_checkpoint(
    state: dict[str, Any],
    path: Path,
    family: Family,
    optimizers: dict[str, torch.optim.Optimizer],
) -> Snapshot:
    """A snapshot of a checkpoint just loaded into `family` and `optimizers` (in this rank's
    layout), with its training `state`."""
    return Snapshot(
        step=state["step"],
        updates=state["updates"],
        kept_seconds=state["kept_seconds"],
        modules=_weights(family),
        optimizers={k: clone_state(o.state_dict()) for k, o in optimizers.items()},
        family=state["family"],
        rng=state["rng"],
        path=path,
    )


def restore(
    snap: Snapshot,
    family: Family,
    optimizers: dict[str, torch.optim.Optimizer],
    guards: dict[str, Guard],
    guard_windows: dict[str, tuple[list[float], list[float]]] | None,
) -> None:
    """Put `snap` (held in memory) back: weights, optimizers, family, RNG, and the guards'
    windows as they were when the healthy snapshot was taken (`guard_windows`)."""
    assert snap.modules is not None and snap.optimizers is not None  # taken in memory
    for key, module in family.modules.items():
        module.load_state_dict(snap.modules[key])
    for name, opt in optimizers.items():
        opt.load_state_dict(clone_state(snap.optimizers[name]))
    family.load_state_dict(clone_state(snap.family))
    set_rng_state(snap.rng)
    for name, windows in (guard_windows or {}).items():
        guards[name].restore_windows(windows)
