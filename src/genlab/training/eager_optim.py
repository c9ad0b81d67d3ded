"""Optimizer calls that do not import torch._dynamo in a process that never compiles them.

torch wraps `Optimizer.add_param_group`, `zero_grad`, `state_dict`, `load_state_dict` and the
functional update kernels (`adam`, `sgd`, ...) so that torch.compile never traces them, and
`Optimizer.step` in a wrapper that marks graph breaks. Both wrappers import torch._dynamo on
their first call: 2.8 s on this project's 2-core machine (torch itself takes 3 s), paid by every
`genlab` process that trains, evaluates a recovery step or resumes. genlab compiles models,
never an optimizer, so in its own command's process nothing can trace these calls and the
wrappers have nothing to do.

`skip_dynamo_import()` (called by the `genlab` command for its own process only; a Python
caller's process is left as torch made it) fills the wrappers' cache of the "disabled" function
with the function itself, which is what the wrapper would call outside of tracing anyway.
`step()` runs an optimizer's update under `torch.no_grad()` as `Optimizer.step` does when not
differentiable; it takes torch's own path whenever that could differ: step hooks are registered,
something patched the instance's `step`, or torch._dynamo is loaded already. Where torch
changes these internals, the attributes are simply not found and torch's own path runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: the flag is set before any import
    import torch

_enabled = False
_FUNCTIONAL = ("adam", "adamw", "sgd")  # torch.optim.<module>.<function>: the update kernels
_STEP_WRAPPERS = ("wrapper", "_use_grad")  # in torch/optim/optimizer.py


def skip_dynamo_import() -> None:
    """For the `genlab` command's own process: optimizer calls stop importing torch._dynamo."""
    global _enabled
    _enabled = True


def prepare() -> None:
    """Fill the wrappers' caches (once torch.optim is importable; build_optimizer calls it)."""
    if not _enabled or "torch._dynamo" in sys.modules:
        return
    import torch

    opt = torch.optim.Optimizer
    wrapped: list[Any] = [opt.add_param_group, opt.zero_grad, opt.state_dict, opt.load_state_dict]
    for name in _FUNCTIONAL:
        module = sys.modules.get(f"torch.optim.{name}")
        if module is not None and callable(getattr(module, name, None)):
            wrapped.append(getattr(module, name))
    for fn in wrapped:
        raw = getattr(fn, "__wrapped__", None)
        if raw is not None and not hasattr(raw, "__dynamo_disable"):
            # torch._compile._disable_dynamo's wrapper calls `raw.__dynamo_disable` when set.
            setattr(raw, "__dynamo_disable", raw)


def step(optimizer: torch.optim.Optimizer) -> None:
    """`optimizer.step()`, without the first call's torch._dynamo import where that is safe."""
    raw = _plain_step(optimizer)
    if raw is None:
        optimizer.step()
        return
    import torch

    with torch.no_grad():
        raw(optimizer)


def _plain_step(optimizer: torch.optim.Optimizer) -> Callable[..., Any] | None:
    """The class's own update function under torch's step wrappers, or None where calling it
    directly could differ from `optimizer.step()`."""
    from torch.optim import optimizer as torch_optimizer

    if not _enabled or "torch._dynamo" in sys.modules or "step" in vars(optimizer):
        return None
    if optimizer.defaults.get("differentiable", False):
        return None
    hooks = (
        getattr(torch_optimizer, "_global_optimizer_pre_hooks", None),
        getattr(torch_optimizer, "_global_optimizer_post_hooks", None),
        getattr(optimizer, "_optimizer_step_pre_hooks", None),
        getattr(optimizer, "_optimizer_step_post_hooks", None),
    )
    if any(h is None or len(h) for h in hooks):
        return None
    fn = type(optimizer).step
    # Unwrap torch's own step wrappers only (profile_hook_step's `wrapper`, then
    # `_use_grad_for_differentiable`'s `_use_grad`), never a decorator of another origin.
    while _is_torch_step_wrapper(fn):
        fn = fn.__wrapped__
    return fn if fn is not type(optimizer).step else None


def _is_torch_step_wrapper(fn: Any) -> bool:
    code = getattr(fn, "__code__", None)
    return (
        hasattr(fn, "__wrapped__")
        and code is not None
        and code.co_name in _STEP_WRAPPERS
        and code.co_filename.replace("\\", "/").endswith("torch/optim/optimizer.py")
    )
