"""Optimizers. Weight decay applies to matrices only (Linear weights), never to norms,
biases or embeddings: decaying those hurts more than it regularizes."""

from __future__ import annotations

import sys

import torch
from torch import nn

from genlab.config import OptimConfig
from genlab.training import eager_optim


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay, seen = [], [], set()
    embedding_params = {
        id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()
    }
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:  # tied weights appear once
            continue
        seen.add(id(p))
        # `is_embedding`: a pipeline stage's copy of the tied embedding matrix (pipeline.py).
        if p.dim() >= 2 and id(p) not in embedding_params and not getattr(p, "is_embedding", 0):
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(
    model: nn.Module,
    cfg: OptimConfig,
    lr: float | None = None,
    betas: tuple[float, float] | None = None,
    groups: list[dict] | None = None,
) -> torch.optim.Optimizer:
    """The optimizer `cfg.name` over `model`'s trainable parameters (`lr`/`betas` override
    the section's, e.g. a GAN's two learning rates; `groups` replaces the default grouping,
    e.g. fine-tuning's per-layer learning rates)."""
    groups = groups if groups is not None else param_groups(model, cfg.weight_decay)
    lr = cfg.lr if lr is None else lr
    betas = betas or (cfg.beta1, cfg.beta2)
    kernel = kernel_choice([p for g in groups for p in g["params"]])
    eager_optim.prepare()  # in the `genlab` command: no torch._dynamo import for this
    if cfg.name == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            groups, lr=lr, betas=betas, eps=cfg.eps, **kernel
        )
    elif cfg.name == "adam":
        # Plain Adam: weight decay is added to the gradient (coupled L2), as torch defines it.
        optimizer = torch.optim.Adam(groups, lr=lr, betas=betas, eps=cfg.eps, **kernel)
    else:
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, **kernel)
    # A saved state carries the kernel flags of the optimizer that saved it (torch restores
    # them with the state): keep this optimizer's own, so a checkpoint from a fused run loads
    # into a sharded one and back.
    optimizer.register_load_state_dict_pre_hook(_keep_kernel_flags)
    return optimizer


FUSED_DEVICES = ("cpu", "cuda")  # where torch has fused Adam/AdamW/SGD kernels


def kernel_choice(params: list[nn.Parameter]) -> dict[str, bool]:
    """`{"fused": True}` when every parameter is a plain floating-point tensor on a device
    with fused kernels: one kernel updates all tensors (on CPU about 5x faster than the
    per-tensor loop torch picks there by default; measured in benchmarks/train_throughput.py).
    Otherwise `{}`: torch's own default (foreach on GPU). Sharded parameters (DTensor, FSDP)
    keep torch's default."""
    # A DTensor exists only once its module is imported (by FSDP's or a user's code): where it
    # is not, no parameter can be one, and importing it here would cost every run ~0.8 s.
    dtensor = sys.modules.get("torch.distributed.tensor")
    sharded = dtensor.DTensor if dtensor is not None else ()
    fusable = bool(params) and all(
        p.is_floating_point() and p.device.type in FUSED_DEVICES and not isinstance(p, sharded)
        for p in params
    )
    return {"fused": True} if fusable else {}


def _keep_kernel_flags(optimizer: torch.optim.Optimizer, state: dict) -> dict:
    """load_state_dict pre-hook: the saved groups with this optimizer's `fused`/`foreach`
    flags (torch then places the step counters where this optimizer's kernel wants them).
    A copy: the caller's state is left as it was."""
    groups = [
        {**saved, "fused": mine.get("fused"), "foreach": mine.get("foreach")}
        for saved, mine in zip(state["param_groups"], optimizer.param_groups, strict=False)
    ]
    return {**state, "param_groups": groups}


def weight_penalty(params: list[nn.Parameter], l1: float, l2: float) -> torch.Tensor | None:
    """Explicit L1 / L2 penalties on weight matrices (dim >= 2), added to the loss; None when
    both are off. (Decoupled weight decay is the optimizer's `weight_decay` instead.)"""
    if l1 == 0 and l2 == 0:
        return None
    mats = [p for p in params if p.dim() >= 2 and p.requires_grad]
    total = torch.zeros((), device=mats[0].device if mats else None)
    if l1 > 0:
        total = total + l1 * sum(p.abs().sum() for p in mats)
    if l2 > 0:
        total = total + l2 * sum(p.pow(2).sum() for p in mats)
    return total


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate; a group with an `lr_scale` (discriminative fine-tuning rates)
    gets `lr * lr_scale`."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
