"""Pipeline parallelism for genlab's GPT with `torch.distributed.pipelining`.

Split: the n_layer blocks are cut into `world` consecutive ranges, one per rank (the first
stages take the extra block when uneven). Stage 0 also owns wte, wpe and the embedding
dropout; the last stage owns ln_f and lm_head. Each stage module keeps the full model's
parameter names ("blocks.2.ln1.weight"), so the full state dict is a merge of the stages'.
Stage 0 takes the int64 token ids (b, T); every stage hands the float residual stream
(b, T, C) to the next; the last stage returns logits (b, T, V).

Tied weights: GPT uses one (V, C) matrix for wte and lm_head. With ≥2 stages they live on
different ranks, so each holds its own copy (equal at start). After every step the two
copies' gradients are summed (an all-reduce over the pipeline group, zeros from middle
ranks), so both get the gradient of the tied matrix, and identical optimizers keep them equal.

Loss scaling: each micro-batch loss is divided by the number of micro-batches before its
backward (the schedule's own `scale_grads` is off: it divides the whole `.grad`, which
would also shrink gradients accumulated by earlier calls). So `.grad` receives the gradient
of the mean micro-batch loss and successive train_step calls accumulate like backward().
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint

from genlab.errors import ConfigError
from genlab.models.gpt import GPT
from genlab.training.distributed import DistributedRuntime

T = TypeVar("T")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_SCHEDULES = {"gpipe": "ScheduleGPipe", "1f1b": "Schedule1F1B"}


def stage_block_range(n_layer: int, rank: int, world: int) -> range:
    """Blocks of stage `rank`: consecutive, the first n_layer % world stages get one extra."""
    base, extra = divmod(n_layer, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


class _GPTStage(nn.Module):
    """One consecutive slice of a GPT, with the full model's parameter names."""

    def __init__(self, model: GPT, blocks: range, first: bool, last: bool, untie: bool):
        super().__init__()
        self.first, self.last = first, last
        self.activation_checkpointing = model.activation_checkpointing
        if first:
            self.wte, self.wpe, self.drop = model.wte, model.wpe, model.drop
        # ModuleDict keyed by the global index keeps keys like "blocks.2.attn.qkv.weight".
        self.blocks = nn.ModuleDict({str(i): model.blocks[i] for i in blocks})
        if last:
            self.ln_f = model.ln_f
            # With ≥2 stages lm_head gets its own Parameter (a copy of the tied matrix), so it
            # does not alias the caller's model.wte and is synchronised by gradient instead.
            self.lm_head = copy.deepcopy(model.lm_head) if untie else model.lm_head
            # Still the embedding matrix: the optimizer must treat it as one (no weight decay),
            # exactly like its twin wte on stage 0, or the two copies drift apart.
            self.lm_head.weight.is_embedding = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.first:  # x: token ids (b, T) int64
            pos = torch.arange(x.shape[1], device=x.device)
            x = self.drop(self.wte(x) + self.wpe(pos))  # (b, T, C)
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks.values():
            x = checkpoint(block, x, use_reentrant=False) if recompute else block(x)
        return self.lm_head(self.ln_f(x)) if self.last else x  # (b, T, V) or (b, T, C)


class PipelinedGPT:
    """This rank's stage of a GPT split into `world` consecutive stages (one per rank).

    `rank`/`world` are this process's rank and size in `group` (default: the world group).
    The owned modules are moved to `device`; the caller should drop `model` afterwards so
    the parts this rank does not own can be freed.
    """

    def __init__(
        self,
        model: GPT,
        rank: int,
        world: int,
        device: torch.device,
        schedule: str = "gpipe",
        microbatches: int = 2,
        group: dist.ProcessGroup | None = None,
    ):
        if schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {sorted(_SCHEDULES)}, got {schedule!r}")
        if microbatches < 1 or (schedule == "1f1b" and microbatches < world):
            raise ValueError(f"{schedule} needs ≥ {world} micro-batches, got {microbatches}")
        if not 1 <= world <= model.settings.n_layer:
            raise ValueError(f"{world} stages need 1..n_layer={model.settings.n_layer} blocks")
        if world > 1 and (dist.get_rank(group), dist.get_world_size(group)) != (rank, world):
            raise ValueError(f"rank/world ({rank}/{world}) must be this process's in `group`")
        self.rank, self.world, self.device, self.group = rank, world, torch.device(device), group
        self.schedule_name, self.microbatches = schedule, microbatches
        self.is_first, self.is_last = rank == 0, rank == world - 1
        self.vocab_size, self.n_embd = model.vocab_size, model.settings.n_embd
        if world == 1:
            self.stage_module: nn.Module = model.to(self.device)
        else:
            blocks = stage_block_range(model.settings.n_layer, rank, world)
            self.stage_module = _GPTStage(model, blocks, self.is_first, self.is_last, untie=True)
            self.stage_module.to(self.device)
        self._loss_fn: LossFn | None = None
        self._schedule = None  # built lazily: static shapes come from the first batch
        self._shape: tuple[int, ...] | None = None

    # -- training ---------------------------------------------------------------------------

    def _scaled_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # Mean over micro-batches = sum of loss / n; backward of each term accumulates into .grad.
        return self._loss_fn(logits, targets) / self.microbatches

    def _build_schedule(self, b: int, T: int) -> None:
        """Stage + schedule for micro-batches (b, T). Shapes are given statically on every rank
        (no runtime metadata inference, no extra forward); the recv buffers are sized from
        them, so a new batch shape needs a new stage."""
        # Imported here: torch.distributed.pipelining pulls in FSDP/DTensor (~1 s of import).
        from torch.distributed import pipelining

        dtype = next(self.stage_module.parameters()).dtype  # residual-stream dtype
        act = torch.empty(b, T, self.n_embd, dtype=dtype, device="meta", requires_grad=True)
        # requires_grad=True on the activation meta matters: it decides whether the received
        # activation requires grad, i.e. whether any gradient flows back to earlier stages.
        ids = torch.empty(b, T, dtype=torch.long, device="meta")
        logits = torch.empty(b, T, self.vocab_size, dtype=dtype, device="meta", requires_grad=True)
        stage = pipelining.PipelineStage(
            self.stage_module,
            self.rank,
            self.world,
            self.device,
            input_args=ids if self.is_first else act,
            output_args=logits if self.is_last else act,
            group=self.group,
        )
        cls = getattr(pipelining, _SCHEDULES[self.schedule_name])
        self._schedule = cls(stage, self.microbatches, loss_fn=self._scaled_loss, scale_grads=False)
        self._shape = (b, T)

    def _tied_weight(self) -> nn.Parameter | None:
        if self.is_first:
            return self.stage_module.wte.weight
        return self.stage_module.lm_head.weight if self.is_last else None

    def train_step(self, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
        """Forward+backward of the global batch x, y (B, T) in `microbatches` equal parts.

        Call on every rank with same-shaped x and y (only stage 0 reads x's values and only
        the last stage y's). loss_fn(logits (b, T, V), targets (b, T)) -> mean loss of one
        micro-batch, run on the last stage. Adds the gradient of the mean micro-batch loss to
        stage_module's .grad (tied copies synchronised). Returns the mean loss, a 0-dim
        float32 tensor on `device`, on every rank."""
        B, T = x.shape
        if B % self.microbatches:
            raise ValueError(f"batch {B} does not split into {self.microbatches} micro-batches")
        self._loss_fn = loss_fn
        if self.world == 1:  # plain gradient accumulation, no process group needed
            total = torch.zeros((), device=self.device)
            for xm, ym in zip(x.chunk(self.microbatches), y.chunk(self.microbatches)):
                loss = self._scaled_loss(self.stage_module(xm.to(self.device)), ym.to(self.device))
                loss.backward()
                total += loss.detach().float()
            return total
        if self._shape != (B // self.microbatches, T):
            self._build_schedule(B // self.microbatches, T)
        # Take the tied matrix's earlier gradient aside so only this step's is all-reduced.
        tied = self._tied_weight()
        earlier = tied.grad if tied is not None else None
        if tied is not None:
            tied.grad = None
        losses: list[torch.Tensor] = []
        args = (x.to(self.device),) if self.is_first else ()
        target = y.to(self.device) if self.is_last else None
        self._schedule.step(*args, target=target, losses=losses, return_outputs=False)
        self._sync_tied_grad(tied, earlier)
        # The losses are already divided by n: their sum is the mean. Broadcast from the last.
        total = torch.zeros((), device=self.device)
        if self.is_last:
            total = torch.stack([t.detach().float() for t in losses]).sum()
        dist.broadcast(total, group_src=self.world - 1, group=self.group)
        return total

    def _sync_tied_grad(self, tied: nn.Parameter | None, earlier: torch.Tensor | None) -> None:
        """Sum the (V, C) tied-matrix gradient of stage 0 (input use) and the last stage
        (output use); middle ranks contribute zeros. One all-reduce over the pipeline group
        instead of a [first, last] subgroup: new_group would be a collective over the whole
        default group, awkward when the pipeline group is part of a larger mesh."""
        if tied is None:
            dtype = next(self.stage_module.parameters()).dtype
            g = torch.zeros(self.vocab_size, self.n_embd, dtype=dtype, device=self.device)
        else:
            g = tied.grad if tied.grad is not None else torch.zeros_like(tied)
        dist.all_reduce(g, op=dist.ReduceOp.SUM, group=self.group)
        if tied is not None:
            tied.grad = g if earlier is None else earlier.add_(g)

    # -- whole-model views ------------------------------------------------------------------

    def grad_norm_sq(self) -> torch.Tensor:
        """Sum of squared gradient entries over the whole model (tied matrix counted once,
        on stage 0), all-reduced: the same 0-dim float32 tensor on every rank."""
        skip = self.stage_module.lm_head.weight if self.is_last and self.world > 1 else None
        total = torch.zeros((), device=self.device)
        for p in self.stage_module.parameters():  # parameters() yields a shared one once
            if p.grad is not None and p is not skip:
                total += p.grad.detach().float().pow(2).sum()
        if self.world > 1:
            dist.all_reduce(total, op=dist.ReduceOp.SUM, group=self.group)
        return total

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Collective: the complete GPT state dict (CPU tensors, GPT.state_dict() keys) on
        every rank, merged from the stages (their keys are disjoint full-model names)."""
        # copy=True: on a CPU model .cpu() would alias the live parameters.
        sd = self.stage_module.state_dict()
        local = {k: v.detach().to("cpu", copy=True) for k, v in sd.items()}
        if self.world == 1:
            return local
        parts: list[dict[str, torch.Tensor] | None] = [None] * self.world
        dist.all_gather_object(parts, local, group=self.group)
        # Stage order gives GPT's key order: wte, wpe, blocks.0.., ln_f, lm_head.
        return {k: v for part in parts for k, v in part.items()}

    def load_full_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Load this rank's part of a complete GPT state dict (strict, no collective)."""
        own = self.stage_module.state_dict().keys()
        missing = [k for k in own if k not in sd]
        if missing:
            raise KeyError(f"state dict lacks this stage's keys: {missing[:5]}")
        self.stage_module.load_state_dict({k: sd[k] for k in own})


class PipelineRuntime(DistributedRuntime):
    """Pipeline parallel: rank r runs stage r of the GPT (pipeline.py) on the whole global
    batch, cut into micro-batches. Evaluation and samples gather the full model on every rank
    (a collective), so every rank takes part in them."""

    forward_is_collective = True

    def setup_family(self, family: Any, cfg: Any) -> None:
        t = cfg.train
        problem = None
        if cfg.model.family != "gpt" or not hasattr(family, "split_pipeline"):
            problem = f"model.family={cfg.model.family!r} (it splits genlab's GPT only)"
        elif cfg.model.n_layer < self.world_size:
            problem = f"model.n_layer={cfg.model.n_layer} blocks over {self.world_size} stages"
        elif t.ema_decay > 0 or cfg.finetune.init_from is not None:
            problem = "train.ema_decay or finetune.init_from (whole-model features)"
        elif cfg.optim.l1 > 0 or cfg.optim.l2 > 0 or cfg.model.z_loss > 0:
            problem = "optim.l1/optim.l2/model.z_loss (use optim.weight_decay)"
        elif t.checkpoint_format != "consolidated":
            problem = "train.checkpoint_format=sharded"
        elif t.pipeline_schedule == "1f1b" and t.pipeline_microbatches < self.world_size:
            problem = (
                f"train.pipeline_schedule=1f1b and train.pipeline_microbatches="
                f"{t.pipeline_microbatches} (1f1b needs at least {self.world_size})"
            )
        elif t.batch_size % t.pipeline_microbatches:
            problem = (
                f"train.batch_size={t.batch_size}, which does not split into "
                f"train.pipeline_microbatches={t.pipeline_microbatches} equal micro-batches"
            )
        if problem:
            raise ConfigError(
                f"train.strategy=pipeline cannot train with {problem}; change that setting "
                "or use train.strategy=fsdp/ddp"
            )

        def split(model: nn.Module) -> Any:
            world, schedule = self.world_size, t.pipeline_schedule
            return PipelinedGPT(
                model, self.rank, world, self.device, schedule, t.pipeline_microbatches
            )

        self.pipe = family.split_pipeline(self, split)
        self.full_model = family.model  # for its tied-parameter names

    @property
    def pipeline_stages(self) -> int:
        return self.world_size

    def shard(self, items: list[T]) -> list[T]:
        return items  # every stage sees the whole batch (stage 0 its inputs, the last its targets)

    def clip_and_measure(self, params: list[nn.Parameter], clip: float, mode: str) -> torch.Tensor:
        norm = float(self.pipe.grad_norm_sq().sqrt())  # whole model, tied matrix once
        if clip > 0 and mode == "norm":
            coef = min(1.0, clip / (norm + 1e-6))  # the same on every stage
            if coef < 1.0:
                torch._foreach_mul_([p.grad for p in params if p.grad is not None], coef)
        elif clip > 0:
            torch.nn.utils.clip_grad_value_(params, clip)
        return torch.tensor(norm)

    def consolidated_weights(self, modules: dict[str, nn.Module]) -> dict[str, Any]:
        from genlab.training.fsdp import without_tied_duplicates

        full = self.pipe.full_state_dict()  # collective
        return {"model": without_tied_duplicates(full, self.full_model)}

    def consolidated_optimizer(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        import torch.distributed as dist

        parts: list[Any] = [None] * self.world_size
        dist.all_gather_object(parts, optimizer.state_dict())
        return {"pipeline_stages": parts}

    def load_consolidated_weights(self, path: Path, modules: dict[str, nn.Module]) -> None:
        from safetensors.torch import load_file

        from genlab.training.checkpoint import misfit, weights_file
        from genlab.training.fsdp import with_tied_names

        state = with_tied_names(load_file(weights_file(path, "model")), self.full_model)
        try:
            self.pipe.load_full_state_dict(state)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise misfit(path, exc) from exc

    def load_consolidated_optimizer(
        self, optimizer: torch.optim.Optimizer, state: dict[str, Any]
    ) -> None:
        optimizer.load_state_dict(state["pipeline_stages"][self.rank])
