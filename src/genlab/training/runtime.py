"""Process-level details: device choice, seeding, RNG state capture, autocast."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np
import torch


def pick_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        from genlab.errors import ConfigError

        raise ConfigError(
            "train.device is 'cuda' but no CUDA GPU is available; set train.device=cpu or auto"
        )
    return torch.device(choice)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain values (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": _py_state_to_list(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # This process's GPU only (torch.cuda.set_device chose it): a run resumed on a machine
        # with fewer GPUs still finds it; a CPU run never starts CUDA for it.
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_s = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_s["keys"].numpy().astype(np.uint32),
            np_s["pos"],
            np_s["has_gauss"],
            np_s["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _py_state_to_list(s: tuple) -> list:
    version, internal, gauss = s
    return [version, list(internal), gauss]


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 / fp16 autocast, or a null context for fp32 (one code path either way)."""
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)
    return contextlib.nullcontext()


class Autocast:
    """The forward's autocast context, one object the family keeps: bf16 / fp16 autocast, or
    nothing for fp32. `precision` may be set after the family is built (`train.precision:
    auto` decides once the model exists: training/precision.py)."""

    def __init__(self, device: torch.device, precision: str):
        self.device, self.precision = device, precision
        self._active: list[contextlib.AbstractContextManager] = []  # entered, innermost last

    def __enter__(self) -> Any:
        ctx = autocast(self.device, self.precision)
        self._active.append(ctx)
        return ctx.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self._active.pop().__exit__(*exc)
