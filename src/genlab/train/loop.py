"""The one training loop. Every optimizer step passes through the stability guard before it is
applied; the loop carries out the guard's decision (skip, cool down, roll back, abort).

Two counters: `step` counts iterations (batches drawn; logs, cadence, max_steps and fault
injection use it; it never goes back) and `updates` counts optimizer updates applied to the
current weights (the lr schedule uses it; a skipped step does not advance it and a rollback
rewinds it with the weights).
"""

from __future__ import annotations

import copy
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from genlab import config as config_mod
from genlab.config import ExperimentConfig
from genlab.data.lm import build_lm_data
from genlab.data.tokenizers import load_tokenizer
from genlab.errors import CheckpointError, GuardAbort
from genlab.track import logs, plots
from genlab.track.progress import TrainProgress
from genlab.track.rundir import RunDir, open_existing, prepare_new
from genlab.train import checkpoint as ckpt
from genlab.train.guard import Guard, Verdict, diagnose
from genlab.train.lm_task import Batch, LMTask
from genlab.train.optim import build_optimizer, set_lr
from genlab.train.runtime import autocast, pick_device, rng_state, seed_everything, set_rng_state
from genlab.train.schedule import lr_factor


@dataclass
class Snapshot:
    """A state the run can return to: in RAM (`model` set) or on disk only (`path`)."""

    step: int
    updates: int
    kept_seconds: float
    model: dict[str, torch.Tensor] | None = None
    optimizer: dict[str, Any] | None = None
    sampler: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    path: Path | None = None


@dataclass
class RunResult:
    run_dir: Path
    step: int
    final_metrics: dict[str, float]
    guard: dict[str, int]


EvalCallback = Callable[[int, dict[str, float]], None]


def train(
    cfg: ExperimentConfig,
    run_dir: Path,
    overwrite: bool = False,
    console: Console | None = None,
    on_eval: EvalCallback | None = None,
) -> RunResult:
    """Train from scratch into `run_dir` (refuses a non-empty directory unless `overwrite`).

    `on_eval(step, metrics)` is called after each evaluation (the tuner's pruning hook; it may
    raise to stop the run)."""
    seed_everything(cfg.seed)
    data = build_lm_data(cfg.data, cfg.seed)  # bad data fails here, before anything is written
    device = pick_device(cfg.train.device)
    run = prepare_new(Path(run_dir), overwrite)
    run.config.write_text(cfg.to_yaml(), encoding="utf-8")
    data.tokenizer.save(run.tokenizer_dir)
    return _Training(cfg, run, data, device, console, on_eval).run(resume_from=None)


def resume(
    run_dir: Path,
    overrides: list[str] | None = None,
    console: Console | None = None,
    on_eval: EvalCallback | None = None,
) -> RunResult:
    """Continue a run from its last healthy checkpoint, exactly as if never interrupted."""
    run = open_existing(Path(run_dir))
    cfg = config_mod.load(run.config, overrides or [])
    candidates = ckpt.list_checkpoints(run.checkpoints, verify=True)
    if not candidates:
        raise CheckpointError(
            f"run {str(run_dir)!r} has no complete checkpoint to resume from; start it again "
            f"with `genlab train {run.config} --run-dir {run_dir} --overwrite`"
        )
    healthy = [c for c in candidates if c.healthy]
    start = healthy[-1] if healthy else candidates[-1]
    if start.step >= cfg.train.max_steps:
        raise CheckpointError(
            f"run {str(run_dir)!r} already reached step {start.step} of train.max_steps="
            f"{cfg.train.max_steps}; resume with a larger value, e.g. "
            f"train.max_steps={cfg.train.max_steps * 2}"
        )
    run.config.write_text(cfg.to_yaml(), encoding="utf-8")
    tokenizer = load_tokenizer(run.tokenizer_dir)
    data = build_lm_data(cfg.data, cfg.seed, tokenizer=tokenizer)
    device = pick_device(cfg.train.device)
    return _Training(cfg, run, data, device, console, on_eval).run(resume_from=start)


class _Training:
    def __init__(self, cfg, run: RunDir, data, device, console, on_eval: EvalCallback | None):
        self.cfg = cfg
        self.on_eval = on_eval
        self.run_dir = run
        self.device = device
        self.console = console or Console(stderr=True)
        self.task = LMTask(cfg, data, device)
        self.model = self.task.build_model().to(device)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.guard = Guard(cfg.guard)
        self.autocast = autocast(device, cfg.train.precision)
        self.step = 0
        self.updates = 0
        self.kept_seconds = 0.0  # wall time of steps whose updates are in the weights
        self.elapsed_before = 0.0
        self.recent: deque[Batch] = deque(maxlen=cfg.guard.skip_window)
        self.healthy: Snapshot | None = None
        self.pending: Snapshot | None = None
        self.last_val: dict[str, float] = {}
        self.config_yaml = cfg.to_yaml()

    # -- lifecycle --------------------------------------------------------------------------

    def run(self, resume_from: ckpt.CheckpointInfo | None) -> RunResult:
        cfg = self.cfg
        if resume_from is not None:
            self._load(resume_from)
            for path in (self.run_dir.metrics, self.run_dir.events):
                logs.truncate_after(path, self.step)
            self.console.print(f"resuming {self.run_dir.root} from step {self.step}")
        self.healthy = self._snapshot(path=resume_from.path if resume_from else None)
        if cfg.train.compile:
            self.model.compile()
        self.metrics = logs.JsonlWriter(self.run_dir.metrics)
        self.events = logs.JsonlWriter(self.run_dir.events)
        n_params = sum(p.numel() for p in self.model.parameters())
        self.console.print(
            f"[bold]genlab[/] training {cfg.model.family} ({n_params / 1e6:.2f}M parameters) "
            f"on {self.device.type} → {self.run_dir.root}"
        )
        self.t0 = time.perf_counter()
        progress = TrainProgress(
            cfg.train.max_steps, self.step, self.console, enabled=cfg.train.progress
        )
        try:
            with progress:
                while self.step < cfg.train.max_steps:
                    self.step += 1
                    record = self._train_step()
                    self._after_step(record)
                    progress.update(self.step, record)
        finally:
            self.metrics.close()
            self.events.close()
            self._plot()
        final = self.last_val
        self._write_final_metrics(final)
        self._print_summary(final)
        return RunResult(self.run_dir.root, self.step, final, self.guard.metrics())

    def _train_step(self) -> dict[str, Any]:
        cfg = self.cfg
        t_step = time.perf_counter()
        lr = (
            cfg.optim.lr
            * lr_factor(self.updates, cfg.schedule, cfg.train.max_steps)
            * self.guard.lr_multiplier(self.step)
        )
        set_lr(self.optimizer, lr)
        losses = []
        for micro in range(cfg.train.grad_accum):
            batch = self.task.next_batch(cfg.train.batch_size)
            self.recent.append(batch)
            with self.autocast:
                loss = self.task.loss(self.model, batch)
            if micro == 0:
                loss = self.guard.inject_loss(self.step, loss)
            (loss / cfg.train.grad_accum).backward()
            losses.append(loss.detach())
        self.guard.inject_grads(self.step, self.params)
        train_loss = torch.stack(losses).mean().item()
        grad_norm = self._clip_and_measure()
        verdict = self.guard.inspect(self.step, train_loss, grad_norm)
        if verdict is None:
            self.optimizer.step()
            self.updates += 1
        self.optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - t_step
        if verdict is None:
            self.kept_seconds += seconds
        else:
            self._respond(verdict, seconds)
        tokens = cfg.train.batch_size * cfg.train.grad_accum * self.task.tokens_per_sample
        return {
            "step": self.step,
            "time": round(self._elapsed(), 4),
            "train/loss": train_loss,
            "train/grad_norm": grad_norm,
            "train/lr": lr,
            "throughput/tokens_per_s": tokens / seconds,
            **self.guard.metrics(),
        }

    def _clip_and_measure(self) -> float:
        clip = self.cfg.train.grad_clip
        if clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        else:
            grads = [p.grad for p in self.params if p.grad is not None]
            norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g) for g in grads])
            )
        return float(norm)

    def _after_step(self, record: dict[str, Any]) -> None:
        cfg, step = self.cfg.train, self.step
        last = step == cfg.max_steps
        if self.pending is not None and self.guard.clean_since(self.pending.step, step):
            self._promote(self.pending)
        if step % cfg.eval_every == 0 or last:
            self.last_val = self.task.evaluate(self.model, self.autocast)
            record.update(self.last_val)
            self._print_eval(record)
            if self.on_eval is not None:
                self.on_eval(step, dict(self.last_val))
        self.metrics.write(record)
        if step % cfg.sample_every == 0 or last:
            text = self.task.sample(self.model, seed=self.cfg.seed + step)
            self.run_dir.samples.mkdir(parents=True, exist_ok=True)
            (self.run_dir.samples / f"step-{step}.txt").write_text(text, encoding="utf-8")
        if step % cfg.eval_every == 0:
            self._plot()
        if step % cfg.checkpoint_every == 0 or last:
            self._save_checkpoint(final=last)

    # -- the guard's actions ----------------------------------------------------------------

    def _respond(self, verdict: Verdict, seconds: float) -> None:
        self.guard.lost_steps += 1
        self.guard.lost_seconds += seconds
        self.pending = None  # an event right after a checkpoint: it never becomes healthy
        if verdict.action == "rollback":
            self._rollback(verdict)
        self._log_event(verdict)
        if verdict.action == "abort":
            note = self.task.describe_batches(list(self.recent))
            text = diagnose(self.cfg, verdict, self.step, self.guard, note)
            self.run_dir.diagnosis.write_text(text + "\n", encoding="utf-8")
            raise GuardAbort(text)

    def _rollback(self, verdict: Verdict) -> None:
        snap = self.healthy
        if snap.model is None:  # kept on disk only
            state = ckpt.load_checkpoint(snap.path, self.model)
            snap = self._snapshot_from_state(state, snap.path)
        self.model.load_state_dict(snap.model)
        self.optimizer.load_state_dict(copy.deepcopy(snap.optimizer))
        skipped = self.task.sampler.skipped
        self.task.sampler.load_state_dict(snap.sampler)
        bad_ids = sorted({i for b in self.recent for i in b.ids})
        self.task.sampler.skipped |= skipped | set(bad_ids)
        set_rng_state(snap.rng)
        discarded = self.step - 1 - snap.step
        self.guard.lost_steps += discarded
        self.guard.lost_seconds += self.kept_seconds - snap.kept_seconds
        self.kept_seconds = snap.kept_seconds
        self.updates = snap.updates
        self.recent.clear()
        verdict.detail.update(
            rolled_back_to=snap.step, discarded_steps=discarded, skipped_samples=bad_ids
        )

    def _log_event(self, verdict: Verdict) -> None:
        event = {
            "step": self.step,
            "kind": verdict.kind,
            "action": verdict.action,
            "detail": verdict.detail,
        }
        self.events.write(event)
        self.console.print(
            f"[yellow]guard[/] step {self.step}: {verdict.kind} → [bold]{verdict.action}[/]"
            + (
                f" (back to step {verdict.detail['rolled_back_to']})"
                if "rolled_back_to" in verdict.detail
                else ""
            )
        )

    # -- checkpoints and snapshots -------------------------------------------------------------

    def _train_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "updates": self.updates,
            "kept_seconds": self.kept_seconds,
            "elapsed": self._elapsed(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.task.sampler.state_dict(),
            "rng": rng_state(),
            "guard": self.guard.state_dict(),
            "last_val": self.last_val,
        }

    def _save_checkpoint(self, final: bool) -> None:
        g = self.guard.cfg
        quiet = self.guard.last_event_step <= self.step - g.healthy_after
        healthy = g.healthy_after == 0 or (final and quiet)
        path = ckpt.save_checkpoint(
            self.run_dir.checkpoints,
            self.step,
            self.model,
            self._train_state(),
            self.config_yaml,
            healthy=healthy,
        )
        snap = self._snapshot(path=path, in_memory=g.memory_snapshot)
        if healthy:
            self.healthy, self.pending = snap, None
        else:
            self.pending = snap
        ckpt.prune(self.run_dir.checkpoints, self.cfg.train.keep_checkpoints)

    def _promote(self, snap: Snapshot) -> None:
        ckpt.mark_healthy(snap.path)
        self.healthy, self.pending = snap, None

    def _snapshot(self, path: Path | None, in_memory: bool = True) -> Snapshot:
        snap = Snapshot(self.step, self.updates, self.kept_seconds, path=path)
        if in_memory or path is None:
            snap.model = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            snap.optimizer = copy.deepcopy(self.optimizer.state_dict())
            snap.sampler = self.task.sampler.state_dict()
            snap.rng = rng_state()
        return snap

    def _snapshot_from_state(self, state: dict[str, Any], path: Path) -> Snapshot:
        return Snapshot(
            step=state["step"],
            updates=state["updates"],
            kept_seconds=state["kept_seconds"],
            model={k: v.detach().clone() for k, v in self.model.state_dict().items()},
            optimizer=state["optimizer"],
            sampler=state["sampler"],
            rng=state["rng"],
            path=path,
        )

    def _load(self, info: ckpt.CheckpointInfo) -> None:
        state = ckpt.load_checkpoint(info.path, self.model)
        self.optimizer.load_state_dict(state["optimizer"])
        self.task.sampler.load_state_dict(state["sampler"])
        self.guard.load_state_dict(state["guard"])
        set_rng_state(state["rng"])
        self.step = state["step"]
        self.updates = state["updates"]
        self.kept_seconds = state["kept_seconds"]
        self.elapsed_before = state["elapsed"]
        self.last_val = dict(state["last_val"])

    # -- output ---------------------------------------------------------------------------------

    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t0

    def _plot(self) -> None:
        records = logs.read_jsonl(self.run_dir.metrics)
        events = logs.read_jsonl(self.run_dir.events)
        plots.plot_loss(records, events, self.run_dir.plots / "loss.png")
        plots.plot_series(records, "train/lr", self.run_dir.plots / "lr.png")
        plots.plot_series(records, "train/grad_norm", self.run_dir.plots / "grad_norm.png", True)

    def _write_final_metrics(self, final: dict[str, float]) -> None:
        import json

        out = {"step": self.step, "split": "val", **final}
        self.run_dir.final_metrics.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")

    def _print_eval(self, r: dict[str, Any]) -> None:
        self.console.print(
            f"step {r['step']:>6} | train {r['train/loss']:.4f} | val {r['val/loss']:.4f} "
            f"| lr {r['train/lr']:.2e} | {r['throughput/tokens_per_s']:,.0f} tok/s"
        )

    def _print_summary(self, final: dict[str, float]) -> None:
        g = self.guard
        kinds = {k[5:]: v for k, v in g.counts.items() if k.startswith("kind:")}
        actions = {k: v for k, v in g.counts.items() if not k.startswith("kind:")}
        self.console.print(
            f"[bold]done[/]: step {self.step}, val loss {final.get('val/loss', float('nan')):.4f}"
            f" → {self.run_dir.root}"
        )
        if kinds:
            self.console.print(
                f"stability: events {kinds}, actions {actions}, steps lost {g.lost_steps}, "
                f"time lost {g.lost_seconds:.1f}s"
            )
        else:
            self.console.print("stability: no guard events")
