"""What the training loop needs from a model family (GPT, VAE, GAN): its modules, its
optimizers, one training iteration, evaluation, samples, and its own state.

The loop owns everything generic — the guard, optimizers, learning rates, checkpoints,
snapshots and rollbacks, logs — so a family only says *what* one iteration computes. Each
optimizer step goes through `update(name, compute)`: `compute(hook)` runs forward and backward
and returns the detached loss, passing the loss through `hook` before `backward()` (that is
where the loop adds penalties and injected faults). `update` returns whether the step was
applied; if the guard rolled the run back it raises `IterationOver`, ending the iteration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

LossHook = Callable[[torch.Tensor], torch.Tensor]
Compute = Callable[[LossHook], torch.Tensor]
UpdateFn = Callable[[str, Compute], bool]


class IterationOver(Exception):
    """Raised by `update` after a rollback: the rest of the iteration must not run."""


@dataclass(frozen=True)
class UpdaterSpec:
    name: str  # "model", or "discriminator" / "generator"
    module: nn.Module  # whose trainable parameters this optimizer updates
    lr: float  # base learning rate (the schedule and the guard scale it)
    prefix: str = ""  # metric names: train/{prefix}loss, train/{prefix}grad_norm
    betas: tuple[float, float] | None = None  # overrides optim.beta1/beta2 (GAN)
    groups: list[dict] | None = None  # explicit param groups (fine-tuning: lr_scale each)
    falling_loss: bool = True  # False for adversarial losses (no divergence check)


@dataclass(frozen=True)
class Finding:
    """An event a family's detectors found (mode collapse, ...), for updater `updater`."""

    updater: str
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


class Family(Protocol):
    name: str
    modules: dict[str, nn.Module]  # checkpointed as <key>.safetensors
    updaters: list[UpdaterSpec]  # in the order an iteration steps them
    throughput_key: str  # throughput/tokens_per_s or throughput/samples_per_s
    units_per_step: int  # tokens or samples per iteration
    flops_per_unit: float  # training FLOPs per token or sample (throughput/mfu); 0: unknown
    # One forward + backward on made-up data, timed by `train.precision: auto` (precision.py);
    # None: the family is not calibrated and auto keeps fp32.
    calibration_step: Callable[[], None] | None

    def train_step(self, step: int, update: UpdateFn) -> dict[str, float]: ...

    def after_update(self, name: str) -> None: ...

    def evaluate(self) -> dict[str, float]: ...

    def findings(self, step: int, evaluated: bool) -> list[Finding]: ...

    def write_samples(self, step: int, out_dir: Path | None, seed: int) -> None: ...

    def recent_ids(self) -> list[int]: ...

    def skip(self, ids: list[int]) -> None: ...

    def skipped_ids(self) -> set[int]: ...

    def describe_recent(self) -> str: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def parameter_counts(self) -> dict[str, int]: ...

    def on_finish(self, run_root: Path) -> None: ...

    def save_data_artifacts(self, run_root: Path) -> None: ...
