"""The process runtime the training loop talks to: rank, world size, device, collectives, grad
clipping, what a checkpoint holds, and who writes files. One process (`Runtime`, every
collective the identity, every write allowed) or several launched by torchrun:
`DistributedRuntime` (DDP, here), `FSDPRuntime` (fsdp.py) and `PipelineRuntime`
(pipeline.py). The loop calls the same methods either way, so the single-process path has no
branches.

How several processes split the work (train.strategy=ddp):
- `train.batch_size` is the *global* batch B. Every rank's sampler draws the same B sample ids
  (same seed, same state) and each rank keeps the rank-strided slice `ids[rank::world]`, so the
  union of the ranks' batches in a step is the one-process batch and the sampler state (hence
  checkpoints and skip lists) is the same on every rank and resumes at any world size.
- DDP averages gradients across ranks; per-rank losses are means over B/world samples, so
  their mean is the one-process loss and the averaged gradient its gradient.
- Loss and other logged scalars are all-reduced means; the grad norm is measured after DDP's
  all-reduce, so it is the global norm. The guard sees identical inputs on every rank, hence
  decides identically; its verdict is broadcast from rank 0 anyway.
- Only rank 0 writes the run directory (logs, plots, samples, checkpoints); the other ranks
  take part in every collective and keep their rollback snapshots in RAM.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import resource
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from genlab.errors import ConfigError, GenlabError

T = TypeVar("T")


class Runtime:
    """One process: rank 0 of 1. Collectives are the identity; this rank writes files."""

    rank = 0
    world_size = 1
    strategy = "none"
    forward_is_collective = False  # FSDP/pipeline: every rank must run every forward
    pipeline_stages = 0  # optimizer state saved per stage (train.strategy=pipeline)

    def __init__(self, device: torch.device):
        self.device = device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives (identity with one process) -------------------------------------------------

    def all_reduce_mean(self, value: T) -> T:
        """Mean of a tensor or float over ranks (the same type back)."""
        return value

    def broadcast_object(self, obj: T) -> T:
        """Rank 0's `obj` on every rank (any picklable object)."""
        return obj

    def barrier(self) -> None:
        pass

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. prepares the data cache), then the others."""
        yield

    def on_main(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """`fn(...)` on rank 0 only (file writes); None on the other ranks."""
        return fn(*args, **kwargs) if self.is_main else None

    def shared(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(...)` on rank 0, its result (or its GenlabError) on every rank."""
        return fn(*args, **kwargs)

    # -- data and models -----------------------------------------------------------------------

    def shard(self, items: list[T]) -> list[T]:
        """This rank's part of a global batch: the rank-strided slice."""
        return items

    def setup_family(self, family: Any, cfg: Any) -> None:
        """Wrap the family's modules for this strategy (nothing to do on one process)."""

    def no_sync(self, module: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce on micro-batches before the last (grad accumulation)."""
        return contextlib.nullcontext()

    # -- files and bookkeeping -------------------------------------------------------------------

    def sinks(self, cfg: Any, run: Any, start_step: int, console: Any = None) -> Any:
        """Where the loop's records go (genlab.track.sinks): on rank 0 metrics.jsonl,
        events.jsonl and the config's `track:` tools; on the other ranks nowhere."""
        from genlab.track.sinks import SinkList, open_sinks

        return open_sinks(cfg, run, start_step, console) if self.is_main else SinkList([])

    def reset_peak_memory(self) -> None:
        """Start memory/peak_mb from here on CUDA (not the matmul peak's or the precision
        calibration's buffers, nor an earlier run in the same process); RSS has no reset."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_mb(self) -> float:
        """Peak memory of this process: allocated GPU memory on CUDA, max RSS on CPU."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes vs KiB

    # -- gradients and checkpoints ----------------------------------------------------------

    def clip_and_measure(self, params: list[nn.Parameter], clip: float, mode: str) -> torch.Tensor:
        """Total grad norm before clipping (global over ranks and shards; a 0-dim tensor on
        the device, read by the loop together with the loss), then clip by norm or by value
        (`clip` 0 = off)."""
        from genlab.training.fsdp import full_value, total_grad_norm

        if clip > 0 and mode == "norm":
            return full_value(torch.nn.utils.clip_grad_norm_(params, clip))
        norm = total_grad_norm(params)
        if clip > 0:
            torch.nn.utils.clip_grad_value_(params, clip)
        return norm

    def consolidated_weights(self, modules: dict[str, nn.Module]) -> dict[str, Any]:
        """What rank 0 saves as `<key>.safetensors`: the modules themselves here."""
        return modules

    def consolidated_optimizer(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The optimizer state in one-process layout (state by parameter index)."""
        return optimizer.state_dict()

    def load_consolidated_weights(self, path: Path, modules: dict[str, nn.Module]) -> None:
        from genlab.training.checkpoint import load_weights

        load_weights(path, modules)

    def load_consolidated_optimizer(
        self, optimizer: torch.optim.Optimizer, state: dict[str, Any]
    ) -> None:
        optimizer.load_state_dict(state)

    def close(self) -> None:
        pass


class DistributedRuntime(Runtime):
    """Rank `rank` of `world_size` processes in a torch.distributed process group."""

    def __init__(self, device: torch.device, strategy: str, rank: int, world: int):
        super().__init__(device)
        self.strategy = strategy
        self.rank, self.world_size = rank, world

    def all_reduce_mean(self, value: T) -> T:
        import torch.distributed as dist

        src = value if isinstance(value, torch.Tensor) else torch.tensor(float(value))
        t = src.detach().to(self.device).clone()  # the caller's tensor stays as it was
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= self.world_size
        return t if isinstance(value, torch.Tensor) else float(t)  # type: ignore[return-value]

    def broadcast_object(self, obj: T) -> T:
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        if not self.is_main:
            self.barrier()
        try:
            yield
        finally:
            if self.is_main:
                self.barrier()

    def shared(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        outcome: Any = None
        if self.is_main:
            try:
                outcome = ("ok", fn(*args, **kwargs))
            except GenlabError as exc:
                outcome = ("error", exc)
        kind, value = self.broadcast_object(outcome)
        if kind == "error":
            raise value
        return value

    def shard(self, items: list[T]) -> list[T]:
        return items[self.rank :: self.world_size]

    def setup_family(self, family: Any, cfg: Any) -> None:
        if not hasattr(family, "distribute"):  # every family has one; a new one may not yet
            raise ConfigError(
                f"train.strategy={self.strategy} cannot train model.family="
                f"{cfg.model.family!r} yet; launch it without torchrun and train.strategy=none"
            )
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # DDP broadcasts rank 0's weights at construction (all ranks are seeded alike anyway).
        family.distribute(self, lambda m: DistributedDataParallel(m, device_ids=ids))

    def no_sync(self, module: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        if last or not hasattr(module, "no_sync"):
            return contextlib.nullcontext()
        return module.no_sync()

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _runtime_class(strategy: str) -> type[DistributedRuntime]:
    # FSDP and the pipeline live with their strategies (fsdp.py, pipeline.py), imported only
    # when used: torch.distributed.fsdp/pipelining cost a second of import.
    if strategy == "fsdp":
        from genlab.training.fsdp import FSDPRuntime

        return FSDPRuntime
    if strategy == "pipeline":
        from genlab.training.pipeline import PipelineRuntime

        return PipelineRuntime
    return DistributedRuntime


def init_runtime(train_cfg: Any, device: torch.device, resuming: bool = False) -> Runtime:
    """The runtime for this process, from torchrun's environment (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Without them: one process, `Runtime` (a resumed
    multi-process run continues in one process without its strategy: its consolidated or
    sharded checkpoints load at any process count; the caller says so)."""
    if train_cfg.precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"train.precision=fp16 needs a CUDA GPU (loss scaling), but the device is "
            f"{device.type}; use train.precision=bf16 or fp32 on CPU"
        )
    strategy = train_cfg.strategy
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        if strategy != "none" and not resuming:
            raise ConfigError(
                f"train.strategy={strategy} needs several processes, but this is 1; launch with "
                f"`torchrun --nproc-per-node 2 -m genlab.cli train ...` or set train.strategy=none"
            )
        return Runtime(device)
    if strategy == "none":
        strategy = "ddp"  # `genlab train` under torchrun just works: data parallel
    parts = world * train_cfg.grad_accum  # every micro-batch splits over the ranks
    if train_cfg.batch_size % parts:
        fit = train_cfg.batch_size // parts * parts or parts
        raise ConfigError(
            f"train.batch_size={train_cfg.batch_size} (the global batch) does not split evenly "
            f"into {train_cfg.grad_accum} micro-batch(es) over {world} processes; use a "
            f"multiple of {parts}, e.g. train.batch_size={fit}"
        )
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(minutes=30),
        )
    return _runtime_class(strategy)(device, strategy, rank, world)
