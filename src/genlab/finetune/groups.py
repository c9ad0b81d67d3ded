"""Optimizer param groups for fine-tuning: only trainable parameters, split by discriminative
learning rate.

Weight-decay placement is `genlab.training.optim.param_groups`'s job (matrices decay; norms,
biases and embeddings do not); this module only splits each of its groups further by lr
multiplier, so the two rules compose instead of being written twice.

Every group carries `lr_scale`; the loop must set `group["lr"] = lr * group["lr_scale"]`
(`set_scaled_lr`) instead of one lr for all groups. `lr_scale` is stored in the optimizer's
state_dict, so a resumed run gets the same multipliers back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from genlab.finetune.freeze import GradualUnfreezer, layer_depths, lr_scales
from genlab.training.optim import param_groups


def trainable_param_groups(
    model: nn.Module,
    weight_decay: float,
    lr_decay: float = 1.0,
    unfreezer: GradualUnfreezer | None = None,
) -> list[dict]:
    """Param groups over the trainable parameters (plus, with `unfreezer`, those it will
    unfreeze later), each with `weight_decay` and `lr_scale` = lr_decay ** depth, where depth
    is 0 for the top block and the head, n-1-i for block i and n for the embeddings.

    Frozen parameters are left out, so the optimizer holds no state for them. Group order is
    deterministic (by depth, then decay before no-decay) so a checkpointed optimizer state
    lines up with a freshly built one on resume.
    """
    pending = unfreezer.params() if unfreezer is not None else []
    with _temporarily_trainable(pending):
        base = param_groups(model, weight_decay)
    scales = lr_scales(model, lr_decay)
    depths = layer_depths(model)
    groups: dict[tuple[int, int], dict] = {}
    for kind, group in enumerate(base):
        for p in group["params"]:
            depth = depths.get(id(p), 0)
            key = (depth, kind)
            if key not in groups:
                groups[key] = {
                    "params": [],
                    "weight_decay": group["weight_decay"],
                    "lr_scale": scales.get(id(p), 1.0),
                    "depth": depth,
                }
            groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def set_scaled_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set each group's lr to `lr * lr_scale` (groups without a scale get `lr`)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


@contextmanager
def _temporarily_trainable(params: list[nn.Parameter]) -> Iterator[None]:
    """Mark `params` trainable for the duration (param_groups skips frozen ones)."""
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p, flag in zip(params, before):
            p.requires_grad_(flag)
