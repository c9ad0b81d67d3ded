"""Saving and loading a run's checkpoints from every rank of any strategy.

checkpoint.py writes and reads one directory atomically; this module decides what goes into
it for the process layout at hand: the runtime gathers consolidated weights and optimizer
state to rank 0 (a no-op for one process and DDP, all-gathers for FSDP), or every rank writes
its own shards through DCP (`train.checkpoint_format=sharded`). Every rank calls `save` and
`load`, and gets the same checkpoint path back, so every rank can also roll back from disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from genlab.errors import CheckpointError
from genlab.training import checkpoint as ckpt
from genlab.training.distributed import Runtime
from genlab.training.sharded_checkpoint import load_sharded, save_sharded

# An optimizer with the module whose parameters it updates (DCP names state by parameter).
Optimizers = dict[str, tuple[nn.Module, torch.optim.Optimizer]]


def save(
    rt: Runtime,
    fmt: str,
    root: Path,
    step: int,
    modules: dict[str, nn.Module],
    optimizers: Optimizers | None,
    state: dict[str, Any],
    config_yaml: str,
    healthy: bool,
    dirname: str | None = None,
) -> Path:
    """Write checkpoint `step` (collective); its final path on every rank."""
    if fmt == "sharded":
        tmp = rt.broadcast_object(rt.on_main(ckpt.begin_save, root, step))
        save_sharded(tmp, modules, optimizers)  # each rank its shards, rank 0 the metadata
        rt.barrier()
        final = rt.on_main(
            ckpt.finish_save, tmp, root, step, state, config_yaml, healthy, dirname, "sharded"
        )
    else:
        weights = rt.consolidated_weights(modules)
        if optimizers is not None:
            opt_states = {name: rt.consolidated_optimizer(o) for name, (_, o) in optimizers.items()}
            state = {**state, "optimizers": opt_states}
        final = rt.on_main(
            ckpt.save_checkpoint, root, step, weights, state, config_yaml, healthy, dirname
        )
    return rt.broadcast_object(final)


def load(
    rt: Runtime,
    path: Path,
    modules: dict[str, nn.Module],
    optimizers: Optimizers | None = None,
) -> dict[str, Any]:
    """Load a checkpoint of either format, written at any world size, into this rank's
    modules (and optimizers); return the training state."""
    manifest = ckpt.require_manifest(path)
    if manifest.get("format") == "compressed":
        raise CheckpointError(
            f"{str(path)!r} holds a compressed model (genlab compress), which does not train "
            "further; fine-tune while compressing with compress.recover_steps instead"
        )
    if ckpt.is_sharded(manifest):
        load_sharded(path, modules, optimizers)
        return ckpt.load_state(path)
    state = ckpt.load_state(path)
    for name in optimizers or {}:
        _check_stages(path, state["optimizers"][name], rt.pipeline_stages)
    rt.load_consolidated_weights(path, modules)
    for name, (_, opt) in (optimizers or {}).items():
        rt.load_consolidated_optimizer(opt, state["optimizers"][name])
    return state


def _check_stages(path: Path, opt_state: dict[str, Any], stages: int) -> None:
    """Pipeline runs keep one optimizer state per stage: they resume with as many stages."""
    saved = len(opt_state.get("pipeline_stages", []))
    if saved == stages:
        return
    how = (
        f"`torchrun --nproc-per-node {saved} -m genlab.cli resume ... train.strategy=pipeline`"
        if saved
        else "train.strategy=none, ddp or fsdp"
    )
    raise CheckpointError(
        f"checkpoint {str(path)!r} holds optimizer state for {saved or 'no'} pipeline stages, "
        f"but this run has {stages or 'none'}; resume it with {how} (its weights load "
        "anywhere: genlab eval/generate, or finetune.init_from)"
    )
