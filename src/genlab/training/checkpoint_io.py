"""Saving and loading a run's checkpoints from every rank of any strategy.

checkpoint.py writes and reads one directory atomically; this module decides what goes into
it for the process layout at hand: the runtime gathers consolidated weights and optimizer
state to rank 0 (a no-op for one process and DDP, all-gathers for FSDP), or every rank writes
its own shards through DCP (`train.checkpoint_format=sharded`). Every rank calls `save` and
`load`, and gets the same checkpoint path back, so every rank can also roll back from disk.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genlab.errors import CheckpointError, GenlabError
from genlab.training import checkpoint as ckpt
from genlab.training.checkpoint_writer import (
    BackgroundQueue,
    guard_space,
    stage_weights,
    tensor_bytes,
    to_host,
)
from genlab.training.distributed import Runtime
from genlab.training.sharded_checkpoint import ShardedSave, load_sharded, save_sharded

# An optimizer with the module whose parameters it updates (DCP names state by parameter).
Optimizers = dict[str, tuple[nn.Module, torch.optim.Optimizer]]


def save(
    rt: Runtime,
    writer: BackgroundQueue,
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
    """Start writing checkpoint `step` (collective: gathers and DCP planning happen here, on
    every rank); the files are written by `writer` (checkpoint_writer.py), in the background
    unless it runs jobs at once. Returns the path the checkpoint will have, on every rank;
    `wait` before reading it back."""
    name = dirname or f"{ckpt.PREFIX}{step}"
    if fmt == "sharded":
        tmp = rt.broadcast_object(rt.on_main(ckpt.begin_save, root, step))
        shards = save_sharded(tmp, modules, optimizers, writer.background)
        if not writer.background:
            rt.barrier()  # every rank's shards are on disk before rank 0 seals the directory
        if rt.is_main:
            needed = shards.bytes + tensor_bytes(state)  # DTensors count whole
            finish = guard_space(_finish_sharded, root, name, needed)
            host_state = to_host(state)
            args = (shards, tmp, root, step, host_state, config_yaml, healthy, dirname, "sharded")
            writer.submit(finish, *args)
        else:  # a lack of space is rank 0's to report (DCP gathers every rank's failure)
            writer.submit(guard_space(shards.wait, root, name, shards.bytes))
        return root / name
    weights = rt.consolidated_weights(modules)  # FSDP gathers, the pipeline merges (collective)
    opt_states = {}
    if optimizers is not None:
        opt_states = {name: rt.consolidated_optimizer(o) for name, (_, o) in optimizers.items()}
    if rt.is_main:
        full_state = {**state, "optimizers": opt_states} if optimizers is not None else state
        staged, host_state = stage_weights(weights), to_host(full_state)  # the host copy
        needed = tensor_bytes([t for t, _ in staged.values()]) + tensor_bytes(host_state)
        write = guard_space(ckpt.write_checkpoint, root, name, needed)
        writer.submit(write, root, step, staged, host_state, config_yaml, healthy, dirname)
    return root / name


def _finish_sharded(shards: ShardedSave, tmp: Path, *args: Any) -> Path:
    """Rank 0's job: once every rank's shards and DCP's metadata are written, seal the
    checkpoint (training state, config, hashes, manifest, rename)."""
    try:
        shards.wait()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ckpt.finish_save(tmp, *args)


def wait(rt: Runtime, writer: BackgroundQueue) -> None:
    """Collective: every rank's pending checkpoint jobs are done. A save that failed for lack
    of space raises rank 0's DiskFullError on every rank (a DCP failure on any rank reaches rank
    0 through DCP's own gather; the other ranks leave the report to it)."""
    if not rt.is_main:
        with contextlib.suppress(GenlabError):
            writer.wait()
    rt.shared(writer.wait)


def load(
    rt: Runtime,
    path: Path,
    modules: dict[str, nn.Module],
    optimizers: Optimizers | None = None,
) -> dict[str, Any]:
    """Load a checkpoint of either format, written at any world size, into this rank's
    modules (and optimizers); return the training state. The checkpoint is verified (manifest,
    hashes, parseable state and weight headers) before anything is loaded, so a damaged one
    is a CheckpointError that leaves the modules as they were."""
    manifest = ckpt.check_manifest(path)
    if manifest.get("format") == "compressed":
        raise CheckpointError(
            f"{str(path)!r} holds a compressed model (genlab compress), which does not train "
            "further; fine-tune while compressing with compress.recover_steps instead"
        )
    ckpt.probe(path)
    if ckpt.is_sharded(manifest):
        load_sharded(path, modules, optimizers)
        return ckpt.load_state(path)
    state = ckpt.load_state(path)
    saved = state.get("optimizers") or {}
    for name in optimizers or {}:
        if name not in saved:
            raise ckpt.misfit(path, KeyError(f"no optimizer state for {name!r}"))
        _check_stages(path, saved[name], rt.pipeline_stages)
    rt.load_consolidated_weights(path, modules)
    for name, (_, opt) in (optimizers or {}).items():
        try:
            rt.load_consolidated_optimizer(opt, saved[name])
        except (ValueError, KeyError, RuntimeError, TypeError) as exc:
            raise ckpt.misfit(path, exc) from None
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
