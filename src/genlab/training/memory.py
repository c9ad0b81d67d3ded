"""fp16 loss scaling. fp16's narrow range underflows small gradients, so the loss is multiplied
by a large factor before backward and the gradients divided by it before the step; a step
whose scaled gradients overflowed (inf/NaN) is skipped and the factor halved. That is normal
fp16 operation, not instability: the loop logs it (`train/fp16_skipped`) instead of letting
the guard count it. With fp32/bf16 `NullScaler` does nothing (one code path either way).

Also the exact model-state footprint of a rank (`memory/state_mb`): peak RSS on CPU includes
the interpreter, libraries and allocator slack, so it hides what sharding saves.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from genlab.training import eager_optim


class NullScaler:
    """No loss scaling (fp32, bf16)."""

    enabled = False

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def unscale_loss(self, value: float) -> float:
        return value

    def unscale_grads(self, optimizer: torch.optim.Optimizer) -> None:
        pass

    def overflowed(self, loss: float, grad_norm: float) -> bool:
        return False

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        eager_optim.step(optimizer)  # optimizer.step(), minus a needless torch._dynamo import

    def update(self) -> None:
        pass

    def metrics(self, overflow: bool) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class LossScaler(NullScaler):
    """torch.amp.GradScaler behind the loop's interface."""

    enabled = True

    def __init__(self, device_type: str):
        self.scaler = torch.amp.GradScaler(device_type)
        self._used = 1.0  # the factor the current step's loss was scaled by

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        self._used = float(self.scaler.get_scale())
        return self.scaler.scale(loss)

    def unscale_loss(self, value: float) -> float:
        return value / self._used

    def unscale_grads(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the gradients by the factor (before clipping measures them)."""
        self.scaler.unscale_(optimizer)

    def overflowed(self, loss: float, grad_norm: float) -> bool:
        """A finite loss with non-finite gradients: fp16 overflow, the scaler's to handle.
        A non-finite loss is left to the guard (the model itself went bad)."""
        return math.isfinite(loss) and not math.isfinite(grad_norm)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        self.scaler.step(optimizer)  # skips the step itself if the gradients overflowed

    def update(self) -> None:
        self.scaler.update()

    def metrics(self, overflow: bool) -> dict[str, float]:
        """Logged every step: whether this one was skipped, and the factor it used."""
        return {"fp16_skipped": int(overflow), "fp16_scale": self._used}

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.scaler.load_state_dict(state)


def make_scaler(precision: str, device: torch.device) -> NullScaler:
    """A loss scaler for fp16 (CUDA only; config checks refuse fp16 elsewhere)."""
    return LossScaler(device.type) if precision == "fp16" else NullScaler()


def model_state_mb(
    params: list[torch.nn.Parameter], optimizers: list[torch.optim.Optimizer]
) -> float:
    """MB this rank holds for training `params`: the parameters, one gradient per trainable
    parameter (it exists from backward to the step) and the optimizer state. Sharded
    (DTensor) tensors count their local shard only, so FSDP ranks show 1/world of it."""

    def local_bytes(t: torch.Tensor) -> int:
        t = t.to_local() if hasattr(t, "to_local") else t
        return t.numel() * t.element_size()

    unique = {id(p): p for p in params}.values()
    total = sum(local_bytes(p) * (2 if p.requires_grad else 1) for p in unique)
    for opt in optimizers:
        for state in opt.state.values():
            total += sum(local_bytes(v) for v in state.values() if isinstance(v, torch.Tensor))
    return total / 2**20
