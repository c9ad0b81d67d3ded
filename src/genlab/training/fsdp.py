"""FSDP2 (`torch.distributed.fsdp.fully_shard`) for genlab's language models (its GPT and local
Hugging Face models), and the conversions between their sharded state and the one-process
checkpoint format.

`fully_shard` turns every parameter into a DTensor sharded on dim 0 across the ranks (so
parameters, gradients and optimizer state each take 1/world of the memory) and all-gathers a
unit's parameters just before its forward/backward. Units are the transformer blocks plus the
root (embeddings, final norm, head), so at most one block's full parameters are live at a time.
The module is changed in place: the family keeps training, evaluating and sampling through the
same object, and every rank must run each forward (they are collectives).

Consolidated checkpoints hold plain full tensors in the one-process layout (weights by name,
optimizer state by parameter index), so a run saved by 2 FSDP ranks resumes on 1 process, under
DDP, or on 4 FSDP ranks; `full_*` gathers (collective, result on rank 0) and `load_full_*`
re-shards (every rank reads the same file).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genlab.errors import ConfigError
from genlab.training.distributed import DistributedRuntime


def shard_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Shard `model` in place: each transformer block, then the root. Returns it."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for unit in _shard_units(model):
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules sharded (and all-gathered) as one unit: the transformer blocks, found as
    fine-tuning finds them (genlab GPT's `blocks`, GPT-2's `transformer.h`, Llama's layers)."""
    from genlab.finetune.freeze import find_blocks

    try:
        return list(find_blocks(model))
    except ConfigError:
        raise ConfigError(
            f"train.strategy=fsdp needs a model with transformer blocks (an nn.ModuleList), not "
            f"{type(model).__name__}; use train.strategy=ddp"
        ) from None


def _is_dtensor(t: Any) -> bool:
    # Where torch.distributed.tensor is not imported, nothing can be a DTensor; importing it
    # to find out would cost every unsharded run ~0.8 s (its clip reads the norm through here).
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(t, module.DTensor)


def full_value(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor with the whole value of `t` (all-gathers a DTensor: collective)."""
    return t.full_tensor() if _is_dtensor(t) else t


def full_state_dict(module: nn.Module, is_main: bool) -> dict[str, torch.Tensor]:
    """Collective: the module's full weights as CPU tensors on rank 0 (empty elsewhere), with
    tied parameters under one name only (safetensors refuses shared tensors)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(module, options=options)
    return without_tied_duplicates(state, module) if is_main else {}


def without_tied_duplicates(
    state: dict[str, torch.Tensor], module: nn.Module
) -> dict[str, torch.Tensor]:
    """`state` with one name per tied parameter: the alphabetically first, as safetensors'
    `save_model` keeps, so a gathered checkpoint has the one-process file's exact keys."""
    drop = set()
    for names in _tie_groups(module):
        drop.update(sorted(names)[1:])
    return {k: v.contiguous() for k, v in state.items() if k not in drop}


def load_full_state_dict(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Shard a full state dict (plain tensors, as a consolidated checkpoint holds) into the
    sharded module; every rank passes the same `state`."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    state = with_tied_names(state, module)
    set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True))


def with_tied_names(state: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """`state` with every name of each tied parameter of `module` (a file keeps just one of
    them, whichever safetensors or genlab chose)."""
    state = dict(state)
    for alias, name in tied_aliases(module).items():
        for missing, present in ((alias, name), (name, alias)):
            if missing not in state and present in state:
                state[missing] = state[present]
    return state


def tied_aliases(module: nn.Module) -> dict[str, str]:
    """{other name: first name} for parameters registered under several names (tied)."""
    return {alias: names[0] for names in _tie_groups(module) for alias in names[1:]}


def _tie_groups(module: nn.Module) -> list[list[str]]:
    """The names of each parameter registered under more than one name."""
    names: dict[int, list[str]] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    return [group for group in names.values() if len(group) > 1]


def full_optimizer_state(optimizer: torch.optim.Optimizer, is_main: bool) -> dict[str, Any]:
    """Collective: `optimizer.state_dict()` with every sharded state tensor gathered whole
    (CPU) — the one-process format, on rank 0 ({} elsewhere). Every rank walks the same
    parameters in the same order, so the all-gathers pair up."""
    state = optimizer.state_dict()
    full: dict[int, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        full[index] = {
            k: full_value(v).cpu() if isinstance(v, torch.Tensor) else v for k, v in entry.items()
        }
    return {"state": full, "param_groups": state["param_groups"]} if is_main else {}


def load_full_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a one-process optimizer state into an optimizer over sharded parameters: each
    per-parameter tensor (exp_avg, ...) is sharded like its parameter; scalars stay plain."""
    from torch.distributed.tensor import distribute_tensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    sharded: dict[int, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        p = params[int(index)]
        sharded[index] = {}
        for k, v in entry.items():
            if _is_dtensor(p) and isinstance(v, torch.Tensor) and v.shape == p.shape:
                v = distribute_tensor(v.to(p.device), p.device_mesh, p.placements)
            sharded[index][k] = v
    optimizer.load_state_dict({"state": sharded, "param_groups": state["param_groups"]})


def total_grad_norm(params: list[nn.Parameter]) -> torch.Tensor:
    """The 2-norm over all gradients as a plain 0-dim tensor (global for sharded grads)."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    return full_value(norm)


class FSDPRuntime(DistributedRuntime):
    """FSDP2: parameters, gradients and optimizer state sharded across the ranks (fsdp.py).
    Every forward all-gathers parameters, so evaluation and sampling run on every rank."""

    forward_is_collective = True

    def setup_family(self, family: Any, cfg: Any) -> None:
        problem, ft = None, cfg.finetune
        if cfg.model.family not in ("gpt", "hf") or not hasattr(family, "distribute"):
            problem = f"model.family={cfg.model.family!r} (it shards language models only)"
        elif cfg.train.ema_decay > 0:
            problem = f"train.ema_decay={cfg.train.ema_decay} (the EMA copy is not sharded)"
        elif ft.init_from is not None and ft.method == "lora":
            problem = "finetune.method=lora (adapters are small: data parallel suits them)"
        elif ft.init_from is not None and ft.unfreeze_every > 0:
            # FSDP fixes which parameters get gradients when it first runs.
            problem = f"finetune.unfreeze_every={ft.unfreeze_every} (layer-wise unfreezing)"
        if problem:
            raise ConfigError(
                f"train.strategy=fsdp cannot train with {problem}; use train.strategy=ddp"
            )
        family.distribute(self, lambda m: shard_model(m, self.device))

    def no_sync(self, module: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        return _gradient_sync(module, last)

    def consolidated_weights(self, modules: dict[str, nn.Module]) -> dict[str, Any]:
        return {k: full_state_dict(m, self.is_main) for k, m in modules.items()}

    def consolidated_optimizer(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return full_optimizer_state(optimizer, self.is_main)

    def load_consolidated_weights(self, path: Path, modules: dict[str, nn.Module]) -> None:
        from safetensors.torch import load_file

        from genlab.training.checkpoint import misfit, weights_file

        for key, module in modules.items():
            state = load_file(weights_file(path, key))
            try:
                load_full_state_dict(module, state)
            except (RuntimeError, KeyError) as exc:
                raise misfit(path, exc) from exc

    def load_consolidated_optimizer(
        self, optimizer: torch.optim.Optimizer, state: dict[str, Any]
    ) -> None:
        load_full_optimizer_state(optimizer, state)


@contextlib.contextmanager
def _gradient_sync(module: nn.Module, last: bool) -> Iterator[None]:
    """FSDP2's no_sync: keep unsharded gradients local until the last micro-batch."""
    if last:
        yield
        return
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)
