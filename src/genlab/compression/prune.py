"""Pruning: which weights to remove, as a plan that can be applied, restricted and reported.

Methods (`compress.prune.method`, the PRUNERS registry):

- `magnitude`: zero the weights of smallest |w|, `sparsity` of them per layer
  (`scope: layer`) or over all pruned layers together (`scope: global`, one threshold).
- `wanda` (Sun et al. 2023, "A Simple and Effective Pruning Approach for LLMs"): zero the
  weights of smallest |w_ij| * ||x_j||, where ||x_j|| is the L2 norm of input feature j over
  calibration batches of the TRAIN split; compared within each output row, as in the paper.
- `structured`: remove whole attention heads, MLP neurons and conv channels, scored by the
  same activation-aware importance summed over the unit (genlab.compression.structured); the
  tensors really shrink.

Unstructured plans are masks (True = keep); a pruned weight is an exact zero. Layers whose
weight is tied to another module (a GPT's head and token embedding) and layers matching
`compress.prune.exclude` are never pruned. Exactly round(sparsity * n) weights go per layer
(per model with `scope: global`, per row for wanda).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from genlab.compression.layers import find_layers, set_module, shrink_layer, weight_dims
from genlab.registry import Registry

Calibrate = Callable[[nn.Module], None]  # runs calibration forwards through a model


@dataclass(frozen=True)
class ChannelCut:
    """One structured unit (a block's heads, an MLP's neurons, a layer's channels): the
    output rows / input columns / norm channels each named module keeps, and attributes to
    set afterwards (e.g. the attention's new `n_head`)."""

    name: str
    keep_out: dict[str, list[int]]
    keep_in: dict[str, list[int]]
    keep_norm: dict[str, list[int]] = field(default_factory=dict)
    attrs: dict[str, dict[str, object]] = field(default_factory=dict)
    removed: int = 0  # units removed (heads, neurons, channels)
    total: int = 0


@dataclass
class PrunePlan:
    """What a method removes from a model of the original structure."""

    method: str
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # layer -> keep mask
    cuts: dict[str, ChannelCut] = field(default_factory=dict)  # unit -> structural cut

    def units(self) -> list[str]:
        """Names of the separately prunable units (layers or structural units)."""
        return [*self.masks, *self.cuts]

    def only(self, names: Sequence[str]) -> PrunePlan:
        keep = set(names)
        return PrunePlan(
            self.method,
            {k: v for k, v in self.masks.items() if k in keep},
            {k: v for k, v in self.cuts.items() if k in keep},
        )

    def apply(self, model: nn.Module) -> None:
        """Zero the masked weights and cut the structural units, in place."""
        with torch.no_grad():
            for name, mask in self.masks.items():
                weight = model.get_submodule(name).weight
                weight.mul_(mask.to(weight.device, weight.dtype))
        for cut in self.cuts.values():
            apply_cut(model, cut)


def apply_cut(model: nn.Module, cut: ChannelCut) -> None:
    for name, rows in cut.keep_out.items():
        set_module(model, name, shrink_layer(model.get_submodule(name), keep_out=rows))
    for name, cols in cut.keep_in.items():
        set_module(model, name, shrink_layer(model.get_submodule(name), keep_in=cols))
    for name, channels in cut.keep_norm.items():
        set_module(model, name, shrink_layer(model.get_submodule(name), keep_out=channels))
    for name, values in cut.attrs.items():
        module = model.get_submodule(name) if name else model
        for attr, value in values.items():
            setattr(module, attr, value)


# --------------------------------------------------------------------------- calibration


@torch.no_grad()
def input_norms(
    model: nn.Module, layers: dict[str, nn.Module], calibrate: Calibrate
) -> dict[str, torch.Tensor]:
    """||x_j||_2 of every input feature (Linear) or input channel (convolutions) of each
    layer, over the calibration forwards: {name: (in_features,)}."""
    sums: dict[str, torch.Tensor] = {}

    def hook(name: str, layer: nn.Module):
        def record(_module, args):
            x = args[0].detach().float()
            if isinstance(layer, nn.Linear):
                sq = x.pow(2).reshape(-1, x.shape[-1]).sum(0)  # (in,)
            else:
                sq = x.pow(2).sum(dim=(0, 2, 3))  # (B, C, H, W) -> (C,)
            sums[name] = sums.get(name, 0) + sq

        return record

    handles = [m.register_forward_pre_hook(hook(n, m)) for n, m in layers.items()]
    was_training = model.training
    model.eval()
    try:
        calibrate(model)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return {n: s.sqrt().cpu() for n, s in sums.items()}


# --------------------------------------------------------------------------- unstructured


def _keep_top(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """A keep-mask of `scores`' shape with exactly n - round(sparsity * n) True (largest)."""
    flat = scores.reshape(-1)
    n_keep = flat.numel() - round(sparsity * flat.numel())
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[torch.topk(flat, n_keep, sorted=False).indices] = True
    return mask.reshape(scores.shape)


def magnitude_masks(
    layers: dict[str, nn.Module], sparsity: float, scope: str = "layer"
) -> dict[str, torch.Tensor]:
    """Keep-masks dropping the smallest |w|: per layer, or one threshold over all layers."""
    scores = {n: m.weight.detach().abs().float().cpu() for n, m in layers.items()}
    if scope == "layer":
        return {n: _keep_top(s, sparsity) for n, s in scores.items()}
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    mask = _keep_top(flat, sparsity)
    out, start = {}, 0
    for n, s in scores.items():
        out[n] = mask[start : start + s.numel()].reshape(s.shape)
        start += s.numel()
    return out


def wanda_masks(
    layers: dict[str, nn.Module], sparsity: float, norms: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Keep-masks dropping the smallest |w_ij| * ||x_j|| within each output row (channel)."""
    out = {}
    for name, layer in layers.items():
        w = layer.weight.detach().abs().float().cpu()
        out_dim, in_dim = weight_dims(layer)
        shape = [1] * w.dim()
        shape[in_dim] = -1
        score = w * norms[name].reshape(shape)  # |W| scaled by its input feature's norm
        rows = score.movedim(out_dim, 0).reshape(w.shape[out_dim], -1)  # (out, rest)
        n_keep = rows.shape[1] - round(sparsity * rows.shape[1])
        keep = torch.zeros_like(rows, dtype=torch.bool)
        keep.scatter_(1, torch.topk(rows, n_keep, dim=1, sorted=False).indices, True)
        out[name] = keep.reshape(score.movedim(out_dim, 0).shape).movedim(0, out_dim)
    return out


def plan_magnitude(
    model: nn.Module, sparsity: float, exclude: Sequence[str], scope: str, calibrate: Calibrate
) -> PrunePlan:
    return PrunePlan("magnitude", magnitude_masks(find_layers(model, exclude), sparsity, scope))


def plan_wanda(
    model: nn.Module, sparsity: float, exclude: Sequence[str], scope: str, calibrate: Calibrate
) -> PrunePlan:
    layers = find_layers(model, exclude)
    return PrunePlan("wanda", wanda_masks(layers, sparsity, input_norms(model, layers, calibrate)))


# compress.prune.method -> plan(model, sparsity, exclude, scope, calibrate) -> PrunePlan
PRUNERS = Registry(
    "prune method",
    {
        "magnitude": "genlab.compression.prune:plan_magnitude",
        "wanda": "genlab.compression.prune:plan_wanda",
        "structured": "genlab.compression.structured:plan_structured",
    },
)


def make_plan(
    model: nn.Module,
    method: str,
    sparsity: float,
    exclude: Sequence[str],
    scope: str,
    calibrate: Calibrate,
) -> PrunePlan:
    """The plan of `method` for `model` (nothing is changed yet)."""
    if method == "none" or sparsity == 0:
        return PrunePlan(method)
    planner = PRUNERS.lookup(method, where="compress.prune.method")
    return planner(model, sparsity, exclude, scope, calibrate)


def gradual_sparsity(step: int, final: float, ramp_steps: int) -> float:
    """Sparsity at `step` of a gradual schedule: cubic ramp from 0 to `final` over
    `ramp_steps` (Zhu & Gupta 2017, "To prune, or not to prune"), then constant."""
    if ramp_steps <= 0 or step >= ramp_steps:
        return final
    return final * (1.0 - (1.0 - step / ramp_steps) ** 3)


def zero_fraction(model: nn.Module, names: Sequence[str]) -> float:
    """Share of exact zeros in the weights of the named layers (measured sparsity)."""
    zeros = total = 0
    for name in names:
        w = model.get_submodule(name).weight
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / max(total, 1)


__all__ = [
    "PRUNERS",
    "ChannelCut",
    "PrunePlan",
    "gradual_sparsity",
    "input_norms",
    "magnitude_masks",
    "make_plan",
    "wanda_masks",
    "zero_fraction",
]
