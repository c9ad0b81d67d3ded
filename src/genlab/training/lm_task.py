"""The GPT family: batches of token windows with sample ids, the loss (with optional z-loss),
validation perplexity, text samples, and an optional EMA of the weights for evaluation."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genlab.config import ExperimentConfig
from genlab.data.lm import LMData, WindowSampler, val_starts, windows
from genlab.evaluation.text import score_lm, target_byte_counter
from genlab.models.gpt import next_token_loss
from genlab.training.distributed import Runtime
from genlab.training.efficiency import lm_flops_per_token
from genlab.training.ema import EMA
from genlab.training.family import Finding, UpdateFn, UpdaterSpec
from genlab.training.goodput import phase


@dataclass
class Batch:
    x: torch.Tensor  # (B, T) int64 inputs
    y: torch.Tensor  # (B, T) int64 next-token targets
    ids: list[int]  # sample ids (window slots), for the guard's skip list
    starts: list[int]  # token offsets in the train stream, for diagnoses


class LMFamily:
    name = "gpt"
    throughput_key = "throughput/tokens_per_s"

    def __init__(
        self,
        cfg: ExperimentConfig,
        data: LMData,
        device: torch.device,
        autocast: contextlib.AbstractContextManager,
        original: LMData | None = None,
    ):
        from genlab.training.lm_model import build_lm_model

        self.cfg = cfg
        self.data = data
        self.device = device
        self.autocast = autocast
        self.block_size = cfg.data.block_size
        built = build_lm_model(cfg, data.tokenizer.vocab_size)
        self.model = built.model.to(device)
        self.finetune = built.setup  # FinetuneSetup or None
        if cfg.train.activation_checkpointing:
            enable_activation_checkpointing(self.model)
        # The module training forwards go through (DDP wraps it; checkpoints, evaluation and
        # samples use the plain `self.model`), and this process's part of a global batch.
        self.train_model: torch.nn.Module = self.model
        self.runtime: Runtime = Runtime(device)  # one process until distribute()
        self.pipe: Any = None  # PipelinedGPT under train.strategy=pipeline
        self.modules: dict[str, torch.nn.Module] = {"model": self.model}
        self.ema = EMA(self.model, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
        if self.ema is not None:
            self.modules["ema"] = self.ema.module
        self.updaters = [UpdaterSpec("model", self.model, cfg.optim.lr, groups=built.groups)]
        # train.batch_size is the global batch of one optimizer step; grad_accum splits it into
        # that many micro-batches (less memory, the same step).
        self.micro_batch = cfg.train.batch_size // cfg.train.grad_accum
        self.units_per_step = cfg.train.batch_size * self.block_size
        self.flops_per_unit = lm_flops_per_token(self.model, *_attention_shape(cfg, self.model))
        self.sampler = WindowSampler(len(data.train_tokens), self.block_size, cfg.seed)
        self.recent: deque[Batch] = deque(maxlen=cfg.guard.skip_window * cfg.train.grad_accum)
        # Validation sets: the held-out split, plus (fine-tuning from a genlab run) the
        # original data's held-out split, to show what was gained and what was forgotten.
        self._val_sets = {"val": self._val_windows(data)}
        self.count_bytes = target_byte_counter(data.tokenizer)
        if original is not None:
            self._val_sets["val_original"] = self._val_windows(original)

    def _val_windows(self, data: LMData) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed, evenly spaced validation windows: inputs and targets, (N, T) each."""
        n_val = self.cfg.train.eval_batches * self.cfg.train.batch_size
        starts = val_starts(len(data.val_tokens), self.block_size, n_val)
        return windows(data.val_tokens, starts, self.block_size)

    # -- training -----------------------------------------------------------------------------

    def distribute(self, runtime: Runtime, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Train through `wrap(model)` (DDP, or FSDP sharding in place) on this rank's slice
        of each global batch."""
        self.runtime = runtime
        spec = self.updaters[0]
        # Explicit param groups (fine-tuning) name parameters by name across the wrap: FSDP
        # replaces every Parameter with a sharded one, and an optimizer over the old ones
        # would update tensors the model no longer uses.
        names = {id(p): n for n, p in self.model.named_parameters()}
        group_names = [[names[id(p)] for p in g["params"]] for g in spec.groups or []]
        self.train_model = wrap(self.model)
        if spec.groups:
            current = dict(self.model.named_parameters())
            groups = [
                {**g, "params": [current[n] for n in ns]}
                for g, ns in zip(spec.groups, group_names, strict=True)
            ]
            self.updaters = [UpdaterSpec(spec.name, self.model, spec.lr, groups=groups)]

    def split_pipeline(self, runtime: Runtime, split: Callable[[nn.Module], Any]) -> Any:
        """Train this rank's pipeline stage `split(model)` (a PipelinedGPT): it becomes the
        checkpointed and optimized module; `self.model` stays the whole GPT, refreshed from
        all stages before evaluation and sampling."""
        self.runtime = runtime
        self.pipe = split(self.model)
        stage = self.pipe.stage_module
        self.modules = {"model": stage}
        self.updaters = [UpdaterSpec("model", stage, self.cfg.optim.lr)]
        return self.pipe

    def next_batch(self) -> Batch:
        """The next global micro-batch's sample ids (kept whole: skip lists and the sampler
        state are the same on every rank) and this rank's windows of it (rank-strided)."""
        ids, starts = self.sampler.next_batch(self.micro_batch)
        x, y = windows(self.data.train_tokens, self.runtime.shard(starts), self.block_size)
        return Batch(x.to(self.device), y.to(self.device), ids, starts)

    def train_step(self, step: int, update: UpdateFn) -> dict[str, float]:
        if self.finetune is not None and self.finetune.unfreezer is not None:
            self.finetune.unfreezer.apply(step)  # a pure function of the step: resume-exact
        accum = self.cfg.train.grad_accum
        z_coef = self.cfg.model.z_loss
        extra: dict[str, float] = {}

        def compute(hook):
            losses, zs = [], []
            for i in range(accum):
                batch = self.next_batch()
                self.recent.append(batch)
                if self.pipe is not None:
                    losses.append(self._pipeline_step(batch, hook, accum))
                    continue
                # DDP all-reduces gradients in the last micro-batch's backward only.
                with self.autocast, self.runtime.no_sync(self.train_model, i == accum - 1):
                    logits = self.train_model(batch.x).float()  # (B, T, V)
                loss = next_token_loss(logits, batch.y)
                if z_coef > 0:
                    flat = logits.view(-1, logits.size(-1))
                    # z-loss: mean squared log-partition keeps the logits from drifting.
                    z = torch.logsumexp(flat, dim=-1).pow(2).mean()
                    loss = loss + z_coef * z
                    zs.append(z.detach())
                loss = hook(loss)
                (loss / accum).backward()
                losses.append(loss.detach())
            if zs:
                extra["train/z_loss"] = torch.stack(zs).mean().item()
            return torch.stack(losses).mean()

        update("model", compute)
        return extra

    def _pipeline_step(self, batch: Batch, hook, accum: int) -> torch.Tensor:
        """Forward+backward of one batch through the pipeline schedule; the loss (with the
        loop's hook) is computed per micro-batch on the last stage, its mean returned on all."""

        def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return hook(next_token_loss(logits, targets)) / accum

        with self.autocast:
            return self.pipe.train_step(batch.x, batch.y, loss_fn).detach() * accum

    def calibration_step(self) -> None:
        """One forward + backward of a micro-batch of random tokens, only to be timed
        (`train.precision: auto`, precision.py): the weights, the sampler and the random
        state stay as they were, the gradients are dropped."""
        vocab = self.data.tokenizer.vocab_size
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, vocab, (self.micro_batch, self.block_size), generator=g)
        x = x.to(self.device)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # dropout draws from the global RNG
            with self.autocast:
                logits = self.model(x).float()  # (B, T, V)
            next_token_loss(logits, x).backward()
        for p in self.model.parameters():
            p.grad = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the timer reads the host clock

    def after_update(self, name: str) -> None:
        if self.ema is not None:
            self.ema.update(self.model)

    # -- evaluation and samples ---------------------------------------------------------------

    def eval_model(self) -> torch.nn.Module:
        if self.pipe is not None:  # collective: every stage sends its part
            self.model.load_state_dict(self.pipe.full_state_dict())
        return self.ema.module if self.ema is not None else self.model

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Loss, perplexity and bits per byte over fixed validation windows, for each
        validation set: the same `score_lm` that `genlab eval` uses, with the tokens and
        bytes they were measured on."""
        model = self.eval_model()
        bs, dev = self.cfg.train.batch_size, self.device
        out: dict[str, float] = {}
        for name, (vx, vy) in self._val_sets.items():
            batches = (
                (vx[i : i + bs].to(dev), vy[i : i + bs].to(dev)) for i in range(0, len(vx), bs)
            )
            score = score_lm(model, batches, self.count_bytes, autocast=self.autocast)
            out.update({f"{name}/{k}": v for k, v in score.metrics().items()})
        return out

    def save_data_artifacts(self, run_root: Path) -> None:
        """tokenizer.json and data.json (which prepared dataset the run trained on)."""
        self.data.tokenizer.save(run_root)
        self.data.write_provenance(run_root)

    def parameter_counts(self) -> dict[str, int]:
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.model.parameters())
        return {"params/trainable": trainable, "params/total": total}

    def on_finish(self, run_root: Path) -> None:
        """Fine-tuning outputs besides the checkpoints: the LoRA adapter alone (and merged
        weights when asked), and a Hugging Face model in save_pretrained format. (peft and
        transformers are imported only here, and only for runs that use them.)"""
        if self.cfg.finetune.init_from is not None and self.cfg.finetune.method == "lora":
            from genlab.finetune import merge_lora, save_adapter

            save_adapter(self.model, run_root / "adapter")
            if self.cfg.finetune.merge_lora:
                merge_lora(self.model)
        if self.cfg.model.family == "hf":
            from genlab.models.hf import save_hf_model

            state = None
            if self.runtime.forward_is_collective:  # sharded: gather the weights (collective)
                from genlab.training.fsdp import with_tied_names

                full = self.runtime.consolidated_weights({"model": self.model})["model"]
                state = with_tied_names(full, self.model) if self.runtime.is_main else None
            if self.runtime.is_main:  # one writer, also under DDP
                save_hf_model(self.model, run_root, state_dict=state)

    def findings(self, step: int, evaluated: bool) -> list[Finding]:
        return []

    @torch.no_grad()
    def write_samples(self, step: int, out_dir: Path | None, seed: int) -> None:
        """A text sample from a fixed prompt, with its own RNG (training RNG untouched).
        `out_dir` None: take part in the forwards only (ranks of a sharded model)."""
        model = self.eval_model()
        was_training = model.training
        model.eval()
        tok = self.data.tokenizer
        idx = torch.tensor([tok.encode("\n")], dtype=torch.long, device=self.device)
        g = torch.Generator(device=self.device).manual_seed(seed)
        # A compiled model would recompile for each context length the sample grows through
        # (seconds each, before dynamic shapes settle); one token at a time runs eagerly.
        eager = self.cfg.train.compile
        with torch.compiler.set_stance("force_eager") if eager else contextlib.nullcontext():
            out = model.generate(idx, self.cfg.train.sample_tokens, 0.8, top_k=50, generator=g)
        model.train(was_training)
        if out_dir is None:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"step-{step}.txt").write_text(tok.decode(out[0].tolist()), encoding="utf-8")

    # -- the guard's view of the data -----------------------------------------------------------

    def recent_ids(self) -> list[int]:
        return sorted({i for b in self.recent for i in b.ids})

    def skip(self, ids: list[int]) -> None:
        self.sampler.skipped.update(ids)
        self.recent.clear()

    def skipped_ids(self) -> set[int]:
        return set(self.sampler.skipped)

    def describe_recent(self) -> str:
        """Which data a failure came from: sample ids, token offsets and a text excerpt."""
        if not self.recent:
            return "no batch"
        last = self.recent[-1]
        excerpt = self.data.tokenizer.decode(
            self.data.train_tokens[last.starts[0] : last.starts[0] + 60].tolist()
        )
        more = "..." if len(last.ids) > 8 else ""
        return (
            f"sample ids {last.ids[:8]}{more} at token offsets {last.starts[:4]}... of the "
            f"train split; first window begins {excerpt!r}"
        )

    # -- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"sampler": self.sampler.state_dict()}
        if self.ema is not None:
            state["ema_updates"] = self.ema.updates
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        if self.ema is not None:
            self.ema.updates = int(state.get("ema_updates", 0))
        self.recent.clear()


def build_lm_family(
    cfg: ExperimentConfig,
    device: torch.device,
    autocast: contextlib.AbstractContextManager,
    run_root: Path | None = None,
) -> LMFamily:
    """The GPT / HF family with its data. The tokenizer comes from `run_root` (resume, eval),
    from the pretrained model (fine-tuning: a new tokenizer would give ids other meanings), or
    is trained on the train split."""
    from genlab.data.lm import build_lm_data
    from genlab.data.tokenizers import load_tokenizer
    from genlab.training.lm_model import original_config, pretrained_tokenizer

    if run_root is not None:
        tokenizer = load_tokenizer(run_root)
    else:
        tokenizer = pretrained_tokenizer(cfg)  # None unless fine-tuning
    with phase("data"):  # the run's goodput account: data preparation
        data = build_lm_data(cfg.data, cfg.seed, tokenizer=tokenizer)
        original = None
        source_cfg = original_config(cfg)
        if source_cfg is not None:  # fine-tuning a genlab run: also watch its held-out data
            original = build_lm_data(source_cfg.data, source_cfg.seed, tokenizer=data.tokenizer)
    return LMFamily(cfg, data, device, autocast, original)


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Per-block activation checkpointing: genlab's GPT, or a Hugging Face model's own."""
    if hasattr(model, "activation_checkpointing"):
        model.activation_checkpointing = True
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        from genlab.errors import ConfigError

        raise ConfigError(
            f"train.activation_checkpointing is not supported by {type(model).__name__}; "
            "set train.activation_checkpointing=false"
        )


def _attention_shape(cfg: ExperimentConfig, model: nn.Module) -> tuple[int, int, int]:
    """(layers, attention width, context) for the attention term of the FLOPs per token:
    genlab's GPT from the config, a Hugging Face model from its own config."""
    if cfg.model.family == "gpt":
        return cfg.model.n_layer, cfg.model.n_embd, cfg.data.block_size
    hf = getattr(model, "config", None)
    layers = getattr(hf, "num_hidden_layers", 0) or 0
    return layers, getattr(hf, "hidden_size", 0) or 0, cfg.data.block_size
