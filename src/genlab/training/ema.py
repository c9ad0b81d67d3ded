"""Exponential moving average of a module's weights (used for evaluation and sampling)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from genlab.errors import CheckpointError, ConfigError


class EMA:
    """An exponential moving average of a module's weights, used for sampling.

    shadow <- decay * shadow + (1 - decay) * weights after each generator step; buffers
    (BatchNorm statistics) are copied as they are. Averaging smooths the oscillation of
    GAN training, so EMA samples are usually better than the raw generator's.
    """

    def __init__(self, module: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"EMA decay must be in [0, 1), got {decay}; use e.g. 0.999")
        self.decay = decay
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        # One multi-tensor kernel for all parameters (on a GPU, not one launch per tensor).
        shadows = list(self.module.parameters())
        torch._foreach_lerp_(shadows, [p.detach() for p in module.parameters()], 1.0 - self.decay)
        for shadow_b, b in zip(self.module.buffers(), module.buffers()):
            shadow_b.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.module.load_state_dict(state["module"])
        except (KeyError, RuntimeError) as exc:
            raise CheckpointError(
                f"EMA state does not fit this generator ({str(exc).splitlines()[0]}); resume "
                "with the same model settings the checkpoint was trained with"
            ) from None
        self.decay, self.updates = float(state["decay"]), int(state["updates"])
