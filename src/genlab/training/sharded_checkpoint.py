"""Sharded checkpoints: weights and optimizer state through torch.distributed.checkpoint (DCP).

Each rank writes only its own shards (`sharded/__<rank>_0.distcp`) and rank 0 the metadata
that says which slice of which tensor lives where, so saving costs no all-gather and no rank
ever holds the whole model. DCP re-shards on load: the same directory loads into 2 or 4 FSDP
ranks, DDP ranks, or one plain process (as `genlab eval` and `genlab resume` without torchrun
do). The optimizer state goes through DCP's `get_/set_optimizer_state_dict`, which names it by
parameter, so the layout does not depend on how the parameters were sharded.
"""

from __future__ import annotations

import warnings
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

DCP_DIR = "sharded"


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _state(
    modules: dict[str, nn.Module],
    optimizers: dict[str, tuple[nn.Module, torch.optim.Optimizer]] | None,
) -> dict:
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    state: dict = {"modules": {k: get_model_state_dict(m) for k, m in modules.items()}}
    if optimizers:
        state["optimizers"] = {
            name: get_optimizer_state_dict(module, opt)
            for name, (module, opt) in optimizers.items()
        }
    return state


@dataclass
class ShardedSave:
    """A DCP save under way: `wait()` returns once this rank's shards (and, on rank 0, DCP's
    metadata, written after every rank's shards) are on disk. `bytes`: this rank's share."""

    bytes: int
    future: Future | None = None

    def wait(self) -> None:
        if self.future is not None:
            self.future.result()


def save_sharded(
    checkpoint_dir: Path,
    modules: dict[str, nn.Module],
    optimizers: dict[str, tuple[nn.Module, torch.optim.Optimizer]] | None,
    background: bool = False,
) -> ShardedSave:
    """Collective: every rank writes its shards into `checkpoint_dir/sharded/`. In the
    `background`, through `dcp.async_save`: the shards are copied to host memory here and
    written by a DCP thread that coordinates the ranks over a process group of its own.
    `bytes` counts the whole checkpoint (a DTensor counts all of its shards)."""
    import torch.distributed.checkpoint as dcp

    from genlab.training.checkpoint_writer import tensor_bytes

    state = _state(modules, optimizers)
    size = tensor_bytes(state)
    target = checkpoint_dir / DCP_DIR
    if not _distributed():  # "assuming ... a single process": we said so (no_dist), also in
        # DCP's background thread, where a local catch_warnings would not reach
        warnings.filterwarnings("ignore", message=".*single process", category=UserWarning)
    if not background:
        dcp.save(state, checkpoint_id=target, no_dist=not _distributed())
        return ShardedSave(size)
    group = _checkpoint_group() if _distributed() else None
    future = dcp.async_save(
        state, checkpoint_id=target, process_group=group, no_dist=not _distributed()
    )
    return ShardedSave(size, getattr(future, "upload_completion", future))


_GROUP: list = []


def _checkpoint_group():
    """A gloo process group for background saves only (collective the first time: every rank
    saves at the same step), so their coordination never interleaves with training's."""
    import torch.distributed as dist

    if not _GROUP or _GROUP[0][0] is not dist.group.WORLD:
        _GROUP[:] = [(dist.group.WORLD, dist.new_group(backend="gloo"))]
    return _GROUP[0][1]


def load_sharded(
    checkpoint_dir: Path,
    modules: dict[str, nn.Module],
    optimizers: dict[str, tuple[nn.Module, torch.optim.Optimizer]] | None = None,
) -> None:
    """Load `checkpoint_dir/sharded/` into `modules` (and optimizers), whatever the number
    of ranks or sharding that wrote it. Collective when a process group is up."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    state = _state(modules, optimizers)  # the targets DCP loads into, in place
    try:
        with warnings.catch_warnings():  # "assuming ... a single process": we said so
            warnings.filterwarnings("ignore", message=".*single process", category=UserWarning)
            dcp.load(state, checkpoint_id=checkpoint_dir / DCP_DIR, no_dist=not _distributed())
    except (RuntimeError, ValueError, KeyError) as exc:
        from genlab.training.checkpoint import misfit

        raise misfit(checkpoint_dir, exc) from exc
    for key, module in modules.items():
        set_model_state_dict(module, state["modules"][key])
    for name, (module, opt) in (optimizers or {}).items():
        set_optimizer_state_dict(module, opt, state["optimizers"][name])
