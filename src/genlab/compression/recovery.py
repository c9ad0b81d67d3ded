"""Recovery fine-tuning: a pruned model trains for `compress.recover_steps` steps through
genlab's one training loop (`genlab.training.loop`: the guard, checkpoints, exact resume),
with its pruned weights held at zero.

`genlab compress` writes a *recovery run*: an ordinary run directory whose config is the
source run's, plus `compress.recover_from` (the source checkpoint) and the recovery's train
settings. When such a config is built (`genlab.training.build.build_family`), the family's
model gets the source checkpoint's weights and the same pruning plan `genlab compress`
computed (deterministic: same weights, same calibration windows), and the family is wrapped in
`RecoveringFamily`, which

- zeroes the gradients of pruned weights (a hook per weight; Adam's moments for them stay
  zero, so they never move) and re-applies the masks after every update;
- with `prune.schedule: gradual`, raises the sparsity along a cubic ramp over the first half
  of the recovery steps (Zhu & Gupta 2017), its masks saved in the family state, so a resume
  or a guard rollback restores them with the weights.

So a killed recovery resumes exactly: run the same `genlab compress` command again.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from genlab import config as config_mod
from genlab.compression.layers import convert_conv1d, find_layers
from genlab.compression.prune import (
    gradual_sparsity,
    input_norms,
    magnitude_masks,
    make_plan,
    wanda_masks,
)
from genlab.config import ExperimentConfig
from genlab.training import checkpoint as ckpt

GRADUAL_EVENTS = 10  # pruning steps of a gradual schedule


def compressed_config(cfg: ExperimentConfig, **compress: Any) -> dict[str, Any]:
    """The source config as a plain model's: LoRA merged (finetune.method full, nothing
    frozen), no weight averaging (the compressed weights are the averaged ones when the run
    kept an EMA), one process; `compress` keys replaced. Returned as raw data to adjust."""
    raw = cfg.to_dict()
    ft = raw["finetune"]
    ft.update(
        method="full",
        freeze_blocks=0,
        freeze_patterns=[],
        unfreeze_every=0,
        merge_lora=False,
        discriminative_lr_decay=1.0,
    )
    ft.pop("lora", None)  # the adapter is merged: its settings would now be an error
    raw["train"].update(
        ema_decay=0.0, early_stopping=None, strategy="none", checkpoint_format="consolidated"
    )
    raw["model"]["gan"]["ema_decay"] = 0.0
    raw["compress"].update(compress)
    return raw


def recovery_config(cfg: ExperimentConfig, source: Path) -> ExperimentConfig:
    """The recovery run's config: train `compress.recover_steps` steps from `source`."""
    spec = cfg.compress
    steps = spec.recover_steps
    raw = compressed_config(cfg, recover_from=str(Path(source).resolve()))
    t = raw["train"]
    t.update(
        max_steps=steps,
        eval_every=min(t["eval_every"], steps),
        # At least four checkpoints, so a killed recovery has somewhere to resume from.
        checkpoint_every=min(t["checkpoint_every"], max(1, steps // 4)),
        sample_every=steps,
        compile=False,  # a short fine-tune does not repay compilation
    )
    raw["optim"]["lr"] = spec.recover_lr or cfg.optim.lr / 10
    raw["schedule"]["warmup_steps"] = min(cfg.schedule.warmup_steps, max(1, steps // 10))
    return config_mod.from_dict(raw, origin="recovery config")


def run_recovery(cfg: ExperimentConfig, run_dir: Path, console: Console) -> ckpt.CheckpointInfo:
    """Train (or resume, or reuse) the recovery run `cfg` in `run_dir`; its last checkpoint."""
    from genlab.training.loop import resume, train

    steps = cfg.train.max_steps
    if run_dir.exists():
        found = ckpt.latest(run_dir / "checkpoints")
        same = (run_dir / "config.yaml").is_file() and (
            config_mod.load(run_dir / "config.yaml").to_dict() == cfg.to_dict()
        )
        if same and found is not None and found.step >= steps:
            return found
        if same and found is not None:
            console.print(f"recovery: resuming {run_dir} from step {found.step}")
            resume(run_dir, console=console)
            return _last(run_dir)
        shutil.rmtree(run_dir)  # another setting's leftovers (ours: a .partial directory)
    train(cfg, run_dir, console=console)
    return _last(run_dir)


def _last(run_dir: Path) -> ckpt.CheckpointInfo:
    found = ckpt.latest(run_dir / "checkpoints")
    assert found is not None, f"the recovery run {run_dir} ended without a checkpoint"
    return found


# --------------------------------------------------------------------------- the family


def recovering_family(family: Any, cfg: ExperimentConfig) -> RecoveringFamily:
    """`family` (just built from a recovery run's config) with the source checkpoint's
    weights, pruned as `genlab compress` planned, wrapped so the masks stay fixed."""
    from genlab.compression.subject import load_subject

    spec = cfg.compress
    source = Path(spec.recover_from)
    info = ckpt.CheckpointInfo(source, int(ckpt.check_manifest(source)["step"]), True)
    subject = load_subject(source.parent.parent, cfg, info)
    target = compressed_module(family, subject.key)
    convert_conv1d(target)
    target.load_state_dict(subject.model.state_dict())
    for key, module in subject.extra.items():  # the GAN's discriminator trains along
        family.modules[key].load_state_dict(module.state_dict())
    p = spec.prune
    schedule = None
    if p.schedule == "gradual":
        layers = find_layers(target, p.exclude)
        masks = {n: torch.ones_like(m.weight, dtype=torch.bool) for n, m in layers.items()}
        ramp = max(1, spec.recover_steps // 2)
        schedule = GradualSchedule(p.method, p.sparsity, p.scope, ramp, subject.calibrate)
    else:
        plan = make_plan(target, p.method, p.sparsity, p.exclude, p.scope, subject.calibrate)
        plan.apply(target)
        masks = dict(plan.masks)
    return RecoveringFamily(family, target, masks, schedule)


def compressed_module(family: Any, key: str) -> nn.Module:
    """The module of a family that compression works on (the LM, the VAE, the generator)."""
    return family.gan.generator if key == "generator" else family.model


class GradualSchedule:
    """When (every ramp/GRADUAL_EVENTS steps up to `ramp`) and how far to prune."""

    def __init__(self, method: str, final: float, scope: str, ramp: int, calibrate):
        self.method, self.final, self.scope, self.ramp = method, final, scope, ramp
        self.every = max(1, ramp // GRADUAL_EVENTS)
        self.calibrate = calibrate

    def sparsity_at(self, step: int) -> float | None:
        """The sparsity to prune to at this step, or None when this step prunes nothing."""
        if step > self.ramp or (step % self.every and step != self.ramp):
            return None
        return gradual_sparsity(step, self.final, self.ramp)

    def masks(self, model: nn.Module, names: list[str], sparsity: float) -> dict:
        layers = {n: model.get_submodule(n) for n in names}
        if self.method == "wanda":
            return wanda_masks(layers, sparsity, input_norms(model, layers, self.calibrate))
        return magnitude_masks(layers, sparsity, self.scope)


class RecoveringFamily:
    """A family whose compressed module trains with its pruning masks held fixed (or raised
    on a gradual schedule). Everything not defined here is the wrapped family's."""

    def __init__(
        self, inner: Any, target: nn.Module, masks: dict, schedule: GradualSchedule | None
    ):
        self.inner = inner
        self.target = target
        self.masks = masks
        self.schedule = schedule
        # Plain optimizer groups: fine-tuning's explicit groups named parameters that
        # structured pruning has replaced.
        self.updaters = [replace(u, groups=None) for u in inner.updaters]
        for name in masks:
            target.get_submodule(name).weight.register_hook(partial(self._masked_grad, name))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _masked_grad(self, name: str, grad: torch.Tensor) -> torch.Tensor:
        return grad * self.masks[name].to(grad.device, grad.dtype)

    @torch.no_grad()
    def _apply_masks(self) -> None:
        for name, mask in self.masks.items():
            weight = self.target.get_submodule(name).weight
            weight.mul_(mask.to(weight.device, weight.dtype))

    def train_step(self, step: int, update) -> dict[str, float]:
        if self.schedule is not None:
            sparsity = self.schedule.sparsity_at(step)
            if sparsity is not None:
                self.masks.update(self.schedule.masks(self.target, list(self.masks), sparsity))
                self._apply_masks()
        return self.inner.train_step(step, update)

    def after_update(self, name: str) -> None:
        self.inner.after_update(name)
        self._apply_masks()

    def state_dict(self) -> dict[str, Any]:
        state = dict(self.inner.state_dict())
        if self.schedule is not None:  # the masks change: they are part of the state
            state["prune_masks"] = {k: v.clone() for k, v in self.masks.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        masks = state.pop("prune_masks", None)
        self.inner.load_state_dict(state)
        if masks is not None:
            self.masks.update(masks)

    def on_finish(self, run_root: Path) -> None:
        """Nothing: the recovery run's product is its checkpoint, read by genlab compress."""


__all__ = [
    "RecoveringFamily",
    "compressed_config",
    "compressed_module",
    "recovering_family",
    "recovery_config",
    "run_recovery",
]
