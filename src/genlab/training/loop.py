"""The one training loop, for every model family. Every optimizer step passes through the
stability guard before it is applied; the loop carries out the guard's decision (skip, cool
down, roll back, abort). A family (training/family.py) only says what one iteration computes.

Two counters: `step` counts iterations (logs, cadence, max_steps and fault injection use it;
it never goes back) and `updates` counts iterations whose updates reached the current weights
(the lr schedule uses it; a skipped step does not advance it; a rollback rewinds it).
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape

from genlab.config import ExperimentConfig
from genlab.errors import GuardAbort, RunInterrupted
from genlab.threads import use_threads
from genlab.track import logs
from genlab.track.console import make_console
from genlab.track.progress import TrainProgress
from genlab.track.rundir import RunDir, check_new, prepare_new
from genlab.track.sinks import RunEnd
from genlab.training import checkpoint as ckpt
from genlab.training import checkpoint_io, efficiency, elastic, goodput, snapshots
from genlab.training import precision as precision_mod
from genlab.training.build import build_family, save_data_artifacts
from genlab.training.checkpoint_writer import BackgroundQueue
from genlab.training.distributed import Runtime, init_runtime
from genlab.training.family import Family, IterationOver
from genlab.training.guard import Guard, Verdict, diagnose
from genlab.training.interrupt import StopRequests
from genlab.training.memory import make_scaler, model_state_mb
from genlab.training.optim import build_optimizer, set_lr, weight_penalty
from genlab.training.precision import PrecisionChoice
from genlab.training.resumable import check_resumable
from genlab.training.run_plots import RunPlots
from genlab.training.runtime import Autocast, pick_device, rng_state, seed_everything, set_rng_state
from genlab.training.schedule import lr_factor
from genlab.training.snapshots import Snapshot
from genlab.training.summary import (
    check_early_stopping_metric,
    gain_and_forgetting,
    print_eval,
    print_summary,
)

EvalCallback = Callable[[int, dict[str, float]], None]


@dataclass
class RunResult:
    run_dir: Path
    step: int
    final_metrics: dict[str, float]
    guard: dict[str, int]


def train(
    cfg: ExperimentConfig,
    run_dir: Path,
    overwrite: bool = False,
    console: Console | None = None,
    on_eval: EvalCallback | None = None,
) -> RunResult:
    """Train from scratch into `run_dir` (refuses a non-empty directory unless `overwrite`).

    `on_eval(step, metrics)` is called after each evaluation (the tuner's pruning hook; it may
    raise to stop the run). A worker that genlab's launcher restarted after a failure resumes
    the run instead (elastic.py)."""
    if not elastic.launched_by_genlab():  # the launcher checked it before starting workers
        check_new(Path(run_dir), overwrite)  # an unusable run directory fails before any work
    clock = goodput.GoodputClock(goodput.attempt_start())
    seed_everything(cfg.seed)
    rt = _runtime(cfg)
    try:
        restarted = elastic.launched_by_genlab() and elastic.is_restart(rt)
        fired = None
        if restarted:
            point = rt.shared(elastic.restart_point, Path(run_dir), cfg)
            if point is not None:
                return _continue(rt, clock, point, console, on_eval, restarted=True)
            fired, lost = rt.shared(elastic.before_start_over, Path(run_dir))
            clock.start_over(lost)  # no checkpoint yet: this run starts again
        # Bad data fails here, before anything is written; cfg: with the concrete precision.
        family, cfg, choice = _family(rt, cfg, None)
        run = rt.shared(prepare_new, Path(run_dir), overwrite or restarted)
        rt.on_main(elastic.write_fired, run.root, fired)
        rt.on_main(run.config.write_text, cfg.to_yaml(), encoding="utf-8")
        rt.on_main(save_data_artifacts, family, run.root)
        training = _Training(cfg, run, family, rt, clock, console, on_eval, choice)
        return training.run(resume_from=None, restarted=restarted)
    finally:
        rt.close()


def _runtime(cfg: ExperimentConfig, resuming: bool = False) -> Runtime:
    """This process's runtime: one process, or a rank under torchrun (process group up)."""
    use_threads(cfg.train.threads)  # 0: the CPUs this process may use (genlab.threads)
    rt = init_runtime(cfg.train, pick_device(cfg.train.device), resuming=resuming)
    try:
        elastic.check_crash_ranks(cfg.guard.inject, rt.world_size)
    except BaseException:
        rt.close()
        raise
    return rt


def _family(
    rt: Runtime, cfg: ExperimentConfig, run_root: Path | None
) -> tuple[Family, ExperimentConfig, PrecisionChoice]:
    """The family, its modules wrapped for the strategy. Rank 0 builds first: it may prepare
    the data cache. `train.precision: auto` is decided here, once the model exists and before
    it is wrapped (rank 0 decides for all); the config returned names the concrete precision."""
    auto = cfg.train.precision == "auto"
    with rt.main_first():
        amp = Autocast(rt.device, "fp32" if auto else cfg.train.precision)
        family = build_family(cfg, rt.device, amp, run_root)
    choice = rt.shared(precision_mod.choose, cfg, family, amp, rt.device)
    amp.precision = choice.chosen
    cfg = precision_mod.with_precision(cfg, amp.precision)
    check_early_stopping_metric(cfg, family)
    rt.setup_family(family, cfg)
    return family, cfg, choice


def resume(
    run_dir: Path,
    overrides: list[str] | None = None,
    console: Console | None = None,
    on_eval: EvalCallback | None = None,
) -> RunResult:
    """Continue a run from its last healthy checkpoint, exactly as if never interrupted. A
    checkpoint that turns out damaged is skipped for the previous complete one, saying so."""
    clock = goodput.GoodputClock(goodput.attempt_start())
    point = check_resumable(Path(run_dir), overrides)
    rt = _runtime(point[1], resuming=True)
    try:
        return _continue(rt, clock, point, console, on_eval, elastic.is_restart(rt))
    finally:
        rt.close()


def _continue(rt: Runtime, clock, point, console, on_eval, restarted: bool) -> RunResult:
    run, cfg, start, skipped = point
    family, cfg, choice = _family(rt, cfg, run.root)
    training = _Training(cfg, run, family, rt, clock, console, on_eval, choice)
    for why in skipped:
        training.console.print(f"[yellow]warning[/]: skipped {escape(why)}")
    if cfg.train.strategy != "none" and rt.world_size == 1:
        training.console.print(
            f"note: resuming a train.strategy={cfg.train.strategy} run in one process, "
            f"without a strategy (its checkpoints load at any process count); "
            f"`genlab resume {shlex.quote(str(run.root))} --nproc-per-node N` resumes it "
            f"with {cfg.train.strategy}",
            highlight=False,
        )
    return training.run(resume_from=start, restarted=restarted)


class _Training:
    def __init__(
        self, cfg, run: RunDir, family: Family, rt: Runtime, clock, console, on_eval, precision
    ):
        self.cfg = cfg
        self.precision: PrecisionChoice = precision  # how train.precision was decided
        self.run_dir = run
        self.family = family
        self.rt = rt  # rank, collectives, who writes files (distributed.py)
        self.device = rt.device
        self.console = console or make_console(stderr=True, quiet=not rt.is_main)
        self.on_eval = on_eval
        self.optimizers = {
            u.name: build_optimizer(u.module, cfg.optim, u.lr, u.betas, u.groups)
            for u in family.updaters
        }
        # All parameters, frozen ones included: clipping skips those without a gradient, and
        # layer-wise unfreezing makes more of them trainable as training goes.
        self.params = {u.name: list(u.module.parameters()) for u in family.updaters}
        self.all_params = [p for group in self.params.values() for p in group]  # memory/state_mb
        self._state_mb_key: tuple | None = None
        self._state_mb_value = 0.0
        precision = cfg.train.precision
        self.scalers = {u.name: make_scaler(precision, self.device) for u in family.updaters}
        primary = family.updaters[0].name
        self.guards = {
            u.name: Guard(cfg.guard, u.name, primary, watch_divergence=u.falling_loss)
            for u in family.updaters
        }
        self.step = 0
        self.updates = 0
        self.kept_seconds = 0.0  # wall time of steps whose updates are in the weights
        self.clock: goodput.GoodputClock = clock  # where the rest of the time went
        clock.add("data", goodput.take_phase("data"))
        self.writer = BackgroundQueue(background=cfg.train.async_checkpoint)
        self.plots = RunPlots(run, rt.is_main, background=cfg.train.async_checkpoint)
        self.crash = elastic.CrashDrill(cfg.guard.inject, rt.rank, run.root)
        self._rollback_s = 0.0  # restore time inside the current iteration
        self.healthy: Snapshot | None = None
        self.pending: Snapshot | None = None
        self.last_val: dict[str, float] = {}
        self.best: dict[str, Any] | None = None  # early stopping: step, value, bad_evals
        self.initial_val: dict[str, float] = {}  # fine-tuning: metrics before training
        self.config_yaml = cfg.to_yaml()
        self.last_saved_step = -1

    # -- lifecycle --------------------------------------------------------------------------

    def run(self, resume_from: ckpt.CheckpointInfo | None, restarted: bool = False) -> RunResult:
        cfg = self.cfg
        lost = self.clock.seconds["restart"]  # a restart that started over: what it lost
        if resume_from is not None:
            with self.clock.measure("checkpoint_load"):
                state = self._load(resume_from)
            after = (self.run_dir.metrics, self.step, state["elapsed"])
            logged = self.rt.on_main(goodput.logged_after, *after) or 0.0
            lost = self.clock.resume(state["elapsed"], state.get("goodput", {}), logged, restarted)
            # The config with this resume's overrides, once the checkpoint has proved to fit.
            self.rt.on_main(self.run_dir.config.write_text, self.config_yaml, encoding="utf-8")
            for path in (self.run_dir.metrics, self.run_dir.events):
                self.rt.on_main(logs.truncate_after, path, self.step)
            self.console.print(f"resuming {self.run_dir.root} from step {self.step}")
        self.healthy = self._snapshot(path=resume_from.path if resume_from else None)
        if cfg.train.compile:
            for module in self.family.modules.values():
                module.compile()
        self.sinks = self.rt.sinks(cfg, self.run_dir, self.step, self.console)  # rank 0 writes
        if restarted:
            self._log_restart(resume_from.path.name if resume_from else "the start", lost)
        counts = self.family.parameter_counts()
        trainable, total = counts["params/trainable"], counts["params/total"]
        share = f"{trainable / 1e6:.3f}M of {total / 1e6:.3f}M parameters trainable"
        device = self.device.type
        if device == "cpu":
            threads = torch.get_num_threads()
            device += f", {threads} thread{'s' if threads > 1 else ''}"
        self.console.print(
            f"[bold]genlab[/] training {cfg.model.family} ({share}) on {device} → "
            f"{self.run_dir.root}"
        )
        if self.precision.requested == "auto":
            self.console.print(escape(self.precision.line()), highlight=False)
        self.peak_flops = self._peak_flops()  # throughput/mfu's denominator (0: not logged)
        if resume_from is None and cfg.finetune.init_from is not None:
            # Where fine-tuning starts from, so the end can show gain and forgetting.
            with self.clock.measure("eval"):
                self.initial_val = self.family.evaluate()
            self.sinks.write({"step": 0, "time": 0.0, **counts, **self.initial_val})
        self.progress = progress = TrainProgress(
            cfg.train.max_steps, self.step, self.console, enabled=cfg.train.progress
        )
        stopped_early = False
        self._compile_pending = cfg.train.compile  # the first step compiles: start-up time
        self.rt.reset_peak_memory()
        self.clock.steps_begin()
        try:
            with progress, StopRequests(self.console.print) as stops:
                while self.step < cfg.train.max_steps and not stopped_early:
                    self.step += 1
                    self.crash.at(self.step)  # guard.inject kind crash: this process dies
                    record = self._iteration()
                    stopped_early = self._after_step(record)
                    progress.update(self.step, record)
                    # Every rank stops at the same step (a checkpoint is a collective).
                    if self.rt.all_reduce_mean(float(stops.requested)) > 0 and not (
                        stopped_early or self.step == cfg.train.max_steps
                    ):
                        self._stop_on_signal(stops.signal_name or "a signal on another rank")
            if cfg.train.early_stopping is not None:
                self._restore_best()
            self.family.on_finish(self.run_dir.root)
        except BaseException as exc:
            self.plots.refresh(final=True)
            self.writer.close()  # let the saves under way complete; the error is the news
            self.plots.close()
            self.sinks.close(RunEnd.after(exc))
            raise
        self.plots.refresh(final=True)
        with self.clock.measure("checkpoint_save"):  # never finish before the last save
            checkpoint_io.wait(self.rt, self.writer)
        self.writer.close()
        self.plots.finish(self.console)
        final = dict(self.last_val)
        if self.initial_val:
            final.update(gain_and_forgetting(self.initial_val, final))
        account = self.clock.report(self.kept_seconds)
        self._write_final_metrics(final, account)
        self.sinks.close(RunEnd("finished", final))
        root = self.run_dir.root
        print_summary(self.console, self.guards, final, self.step, root, account, self.cfg.train)
        return RunResult(self.run_dir.root, self.step, final, self._guard_metrics())

    def _stop_on_signal(self, signal_name: str) -> None:
        """Save a checkpoint at this step (unless one was just saved) and end the run with
        the command that continues it."""
        if self.last_saved_step != self.step:
            self.progress.phase(self.step, "saving a checkpoint")
            with self.clock.measure("checkpoint_save"):
                self._save_checkpoint(final=True)  # healthy when the guard was quiet enough
            self.plots.refresh()
        with self.clock.measure("checkpoint_save"):  # "saved" is said only once it is
            checkpoint_io.wait(self.rt, self.writer)
        where = self.run_dir.checkpoints / f"{ckpt.PREFIX}{self.step}"
        raise RunInterrupted(
            f"interrupted by {signal_name} at step {self.step}; checkpoint saved: {where}; "
            f"continue with: genlab resume {shlex.quote(str(self.run_dir.root))}"
        )

    def _iteration(self) -> dict[str, Any]:
        t_step = time.perf_counter()
        record: dict[str, Any] = {"step": self.step}
        self._step_verdicts: list[Verdict] = []
        self._step_applied = True
        try:
            extra = self.family.train_step(self.step, self._make_update(record))
            record.update({k: self.rt.all_reduce_mean(v) for k, v in extra.items()})
        except IterationOver:
            pass
        seconds = time.perf_counter() - t_step
        restore_s, self._rollback_s = self._rollback_s, 0.0  # already in the rollback bucket
        if self._step_applied and not self._step_verdicts:
            self.updates += 1
            if self._compile_pending:
                self.clock.add("startup", seconds)
            else:
                self.kept_seconds += seconds
        else:
            for g in {v.detail.get("updater") for v in self._step_verdicts}:
                self.guards[g].lost_steps += 1
                self.guards[g].lost_seconds += seconds
            self.clock.add("skipped", seconds - restore_s)
        self._compile_pending = False
        record["time"] = round(self.clock.elapsed(), 4)
        rate = self.family.units_per_step / seconds
        record[self.family.throughput_key] = rate
        if self.peak_flops:
            record["throughput/mfu"] = efficiency.mfu(
                self.family.flops_per_unit, rate, self.peak_flops
            )
        record.update(self._guard_metrics())
        record["memory/peak_mb"] = round(self.rt.peak_memory_mb(), 1)
        record["memory/state_mb"] = self._state_mb()
        return record

    def _peak_flops(self) -> float:
        """The matmul peak of every rank's device together, for the dtype the run computes in
        (measured once per machine, cached: efficiency.py); 0 when the family's FLOPs are
        not counted."""
        if not self.family.flops_per_unit:
            return 0.0
        dtype = efficiency.DTYPES[self.cfg.train.precision]
        return self.rt.shared(efficiency.matmul_peak, self.device, dtype) * self.rt.world_size

    def _state_mb(self) -> float:
        """memory/state_mb, recounted only when what it counts changes (the optimizers' state
        entries or the trainable parameters: unfreezing), not every step."""
        optimizers = [*self.optimizers.values()]
        key = (
            tuple(len(o.state) for o in optimizers),
            sum(p.requires_grad for p in self.all_params),
        )
        if key != self._state_mb_key:
            self._state_mb_key = key
            self._state_mb_value = round(model_state_mb(self.all_params, optimizers), 3)
        return self._state_mb_value

    def _make_update(self, record: dict[str, Any]):
        """The `update(name, compute)` a family calls for each optimizer step."""
        cfg = self.cfg

        def update(name: str, compute) -> bool:
            spec = next(u for u in self.family.updaters if u.name == name)
            guard, optimizer, params = self.guards[name], self.optimizers[name], self.params[name]
            scaler = self.scalers[name]  # fp16 loss scaling; a no-op otherwise
            lr = (
                spec.lr
                * lr_factor(self.updates, cfg.schedule, cfg.train.max_steps)
                * guard.lr_multiplier(self.step)
            )
            set_lr(optimizer, lr)
            for opt in self.optimizers.values():  # e.g. G's step leaves grads in D
                opt.zero_grad(set_to_none=True)

            def hook(loss: torch.Tensor) -> torch.Tensor:
                penalty = weight_penalty(params, cfg.optim.l1, cfg.optim.l2)
                if penalty is not None:
                    loss = loss + penalty
                return scaler.scale(guard.inject_loss(self.step, loss))

            # The mean over ranks of their local means: the global batch's loss. The grad norm
            # is measured after DDP's all-reduce, so every rank holds the global one; the
            # guard's inputs are identical on every rank, its verdict is rank 0's anyway.
            loss_t = self.rt.all_reduce_mean(compute(hook)).detach()
            guard.inject_grads(self.step, params)
            scaler.unscale_grads(optimizer)
            norm_t = self._clip_and_measure(params)  # 0-dim, on the device
            # The step's one host read: the guard must see both numbers before the update
            # (a non-finite step never reaches the weights), so they come over together, in
            # one transfer and one wait for the device (clipping is queued before it).
            raw_loss, grad_norm = torch.stack([loss_t.float(), norm_t.float()]).tolist()
            loss = scaler.unscale_loss(raw_loss)
            # fp16 overflow is the scaler's to handle (it skips the step, lowers its factor),
            # logged as train/fp16_skipped and an event, never counted by the guard.
            overflow = scaler.overflowed(loss, grad_norm)
            verdict = None
            if not overflow:
                verdict = self.rt.broadcast_object(guard.inspect(self.step, loss, grad_norm))
            if verdict is None:
                scaler.step(optimizer)
                if not overflow:
                    self.family.after_update(name)
            # Also after a step the guard refused: the scaler closes this step's unscale (its
            # next unscale_ would fail otherwise) and adjusts its factor as for any step.
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            p = spec.prefix
            record.update(
                {f"train/{p}loss": loss, f"train/{p}grad_norm": grad_norm, f"train/{p}lr": lr}
            )
            record.update({f"train/{p}{k}": v for k, v in scaler.metrics(overflow).items()})
            if overflow:
                self._step_applied = False
                self.sinks.write_event(
                    {
                        "step": self.step,
                        "kind": "fp16_overflow",
                        "action": "skip",
                        "detail": {"updater": name, **scaler.metrics(overflow)},
                    }
                )
                return False
            if verdict is None:
                return True
            self._step_applied = False
            self._respond(name, verdict)
            return False

        return update

    def _clip_and_measure(self, params: list[torch.nn.Parameter]) -> torch.Tensor:
        """Total grad norm before clipping, a 0-dim tensor (logged every step; the guard
        watches it)."""
        t = self.cfg.train
        return self.rt.clip_and_measure(params, t.grad_clip, t.grad_clip_mode).to(self.device)

    def _after_step(self, record: dict[str, Any]) -> bool:
        """Promote, evaluate, check detectors, log, sample, checkpoint. True: stop early."""
        t, step = self.cfg.train, self.step
        last = step == t.max_steps
        if self.pending is not None and self._clean_since(self.pending.step):
            self._promote(self.pending)
        evaluated = step % t.eval_every == 0 or last
        stop = False
        if evaluated:
            self.progress.phase(step, "evaluating")
            with self.clock.measure("eval"):
                self.last_val = self.family.evaluate()
            record.update(self.last_val)
            print_eval(self.console, record, self.last_val, self.family.throughput_key)
            if self.on_eval is not None:
                self.on_eval(step, dict(self.last_val))
        self.sinks.write(record)
        for finding in self.family.findings(step, evaluated):
            verdict = self.guards[finding.updater].report(step, finding.kind, finding.detail)
            if verdict is not None:
                self._respond(finding.updater, verdict, in_step=False)
        if evaluated:
            stop = self._early_stopping_check()
        if step % t.sample_every == 0 or last or stop:
            self.progress.phase(step, "writing samples")
            with self.clock.measure("eval"):
                self._write_samples(step)
        if step % t.checkpoint_every == 0 or last or stop:
            self.progress.phase(step, "saving a checkpoint")
            with self.clock.measure("checkpoint_save"):
                self._save_checkpoint(final=last or stop)
            # Plots are drawn in the background, at most every PLOT_REFRESH_S; submitted after
            # the save's copies, which would otherwise compete with the drawing for the GIL.
            self.plots.refresh()
        return stop

    # -- the guard's actions ----------------------------------------------------------------

    def _respond(self, updater: str, verdict: Verdict, in_step: bool = True) -> None:
        """Carry out a verdict. Inside an iteration a rollback ends the iteration
        (IterationOver); a detector's finding between iterations just acts."""
        verdict.detail["updater"] = updater
        if in_step:
            self._step_verdicts.append(verdict)
        self.pending = None  # an event right after a checkpoint: it never becomes healthy
        if verdict.action == "rollback":
            self._rollback(verdict)
        self._log_event(verdict)
        if verdict.action == "abort":
            note = self.family.describe_recent()
            text = diagnose(self.cfg, verdict, self.step, self.guards[updater], note)
            self.rt.on_main(self.run_dir.diagnosis.write_text, text + "\n", encoding="utf-8")
            raise GuardAbort(text)
        if verdict.action == "rollback" and in_step:
            raise IterationOver

    def _rollback(self, verdict: Verdict) -> None:
        t = time.perf_counter()
        snap = self.healthy
        if snap.modules is None:  # kept on disk only: its save must be complete
            checkpoint_io.wait(self.rt, self.writer)
            modules, optimizers = self.family.modules, self._optimizers_by_module()
            state = checkpoint_io.load(self.rt, snap.path, modules, optimizers)
            snap = snapshots.from_checkpoint(state, snap.path, self.family, self.optimizers)
        bad_ids = self.family.recent_ids()
        skipped = set(self.family.skipped_ids())
        windows = self.healthy.guard_windows
        snapshots.restore(snap, self.family, self.optimizers, self.guards, windows)
        self.family.skip(sorted(skipped | set(bad_ids)))
        discarded = self.step - 1 - snap.step
        guard = self.guards[verdict.detail["updater"]]
        guard.lost_steps += discarded
        discarded_s = self.kept_seconds - snap.kept_seconds
        guard.lost_seconds += discarded_s
        self.kept_seconds = snap.kept_seconds
        self._rollback_s += time.perf_counter() - t
        self.clock.add("rollback", discarded_s + time.perf_counter() - t)
        self.updates = snap.updates
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
        self.sinks.write_event(event)
        back = verdict.detail.get("rolled_back_to")
        self.console.print(
            f"[yellow]guard[/] step {self.step}: {verdict.kind} → [bold]{verdict.action}[/]"
            + (f" (back to step {back})" if back is not None else "")
        )

    def _clean_since(self, step: int) -> bool:
        return all(g.clean_since(step, self.step) for g in self.guards.values())

    def _guard_metrics(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for g in self.guards.values():
            for k, v in g.metrics().items():
                total[k] = total.get(k, 0) + v
        return total

    # -- early stopping -----------------------------------------------------------------------

    def _early_stopping_check(self) -> bool:
        es = self.cfg.train.early_stopping
        if es is None:
            return False
        value = self.last_val[es.metric]
        sign = 1.0 if es.mode == "min" else -1.0
        if self.best is None or sign * (self.best["value"] - value) > es.min_delta:
            self.best = {"step": self.step, "value": value, "bad_evals": 0}
            checkpoint_io.save(
                self.rt,
                self.writer,
                self.cfg.train.checkpoint_format,
                self.run_dir.checkpoints,
                self.step,
                self.family.modules,
                None,
                {"step": self.step, "metric": es.metric, "value": value},
                self.config_yaml,
                healthy=True,
                dirname="best",
            )
            return False
        self.best["bad_evals"] += 1
        if self.best["bad_evals"] >= es.patience:
            self.console.print(
                f"early stopping at step {self.step}: {es.metric} has not improved for "
                f"{es.patience} evaluations (best {self.best['value']:.4f} at step "
                f"{self.best['step']})"
            )
            return True
        return False

    def _restore_best(self) -> None:
        """Put the best weights back, re-evaluate, and make them the final checkpoint."""
        if self.best is None or self.best["step"] == self.step:
            return
        with self.clock.measure("checkpoint_load"):
            checkpoint_io.wait(self.rt, self.writer)
            checkpoint_io.load(self.rt, self.run_dir.checkpoints / "best", self.family.modules)
        with self.clock.measure("eval"):
            self.last_val = self.family.evaluate()
        self.console.print(
            f"restored the best weights (step {self.best['step']}): "
            + ", ".join(f"{k} {v:.4f}" for k, v in self.last_val.items())
        )
        self._save_checkpoint(final=True)

    # -- checkpoints and snapshots -------------------------------------------------------------

    def _train_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "updates": self.updates,
            "kept_seconds": self.kept_seconds,
            "elapsed": self.clock.elapsed(),
            "goodput": self.clock.state_dict(),
            "family": self.family.state_dict(),
            "rng": rng_state(),
            "guards": {k: g.state_dict() for k, g in self.guards.items()},
            "scalers": {k: s.state_dict() for k, s in self.scalers.items()},
            "last_val": self.last_val,
            "best": self.best or {},
            "initial_val": self.initial_val,
        }

    def _save_checkpoint(self, final: bool) -> None:
        g = self.cfg.guard
        last_event = max(x.last_event_step for x in self.guards.values())
        quiet = last_event <= self.step - g.healthy_after
        healthy = g.healthy_after == 0 or (final and quiet)
        checkpoint_io.wait(self.rt, self.writer)  # one save in flight; a failed one is raised
        # The RAM copy first: taken after the save is submitted, it competed with the writer
        # thread for the GIL (~35 ms a save on the quickstart, against ~2 ms before it).
        snap = self._snapshot(path=None) if g.memory_snapshot else None
        path = checkpoint_io.save(  # every rank takes part and gets the path
            self.rt,
            self.writer,
            self.cfg.train.checkpoint_format,
            self.run_dir.checkpoints,
            self.step,
            self.family.modules,
            self._optimizers_by_module(),
            self._train_state(),
            self.config_yaml,
            healthy=healthy,
        )
        if not self.writer.background:  # written already: every rank learns how it went
            checkpoint_io.wait(self.rt, self.writer)
        self.last_saved_step = self.step
        if snap is None:
            snap = self._snapshot(path=path, in_memory=False)
        snap.path = path
        if healthy:
            self.healthy, self.pending = snap, None
        else:
            self.pending = snap
        keep = self.cfg.train.keep_checkpoints
        self.rt.on_main(self.writer.submit, ckpt.prune, self.run_dir.checkpoints, keep)

    def _promote(self, snap: Snapshot) -> None:
        self.rt.on_main(self.writer.submit, ckpt.mark_healthy, snap.path)  # after its save
        self.healthy, self.pending = snap, None

    def _snapshot(self, path: Path | None, in_memory: bool = True) -> Snapshot:
        counters = (self.step, self.updates, self.kept_seconds)
        return snapshots.take(
            counters, self.family, self.optimizers, self.guards, path, in_memory=in_memory
        )

    def _optimizers_by_module(self) -> checkpoint_io.Optimizers:
        return {u.name: (u.module, self.optimizers[u.name]) for u in self.family.updaters}

    def _load(self, info: ckpt.CheckpointInfo) -> dict[str, Any]:
        modules, optimizers = self.family.modules, self._optimizers_by_module()
        state = checkpoint_io.load(self.rt, info.path, modules, optimizers)
        self.family.load_state_dict(state["family"])
        for k, g in self.guards.items():
            g.load_state_dict(state["guards"][k])
        for k, s in self.scalers.items():
            s.load_state_dict(state.get("scalers", {}).get(k, {}))
        set_rng_state(state["rng"])
        self.step = state["step"]
        self.updates = state["updates"]
        self.kept_seconds = state["kept_seconds"]
        self.last_val = dict(state["last_val"])
        self.best = dict(state["best"]) or None
        self.initial_val = dict(state.get("initial_val", {}))
        return state

    def _log_restart(self, origin: str, lost: float) -> None:
        event = elastic.restart_event(self.step, self.clock.restarts, origin, lost)
        self.sinks.write_event(event)  # not the guard's: no guard counter moves
        self.console.print(
            f"[yellow]restart[/] {self.clock.restarts}: the group came back; resumed from "
            f"{origin} ({lost:.1f}s of work and waiting lost)"
        )

    # -- output ---------------------------------------------------------------------------------

    def _write_samples(self, step: int) -> None:
        """Samples from rank 0; with sharded or split models every rank takes part in the
        forwards (collectives) and only rank 0 writes. Weights that are no longer finite (the
        guard switched off, or a fault it cannot see) end the run with exit 3 here, before
        sampling from them."""
        self._require_finite_weights(step)
        seed = self.cfg.seed + step
        if self.rt.is_main:
            self.family.write_samples(step, self.run_dir.samples, seed=seed)
            self.sinks.add_samples(step, self.run_dir.sample_files(step))
        elif self.rt.forward_is_collective:
            self.family.write_samples(step, None, seed=seed)

    def _require_finite_weights(self, step: int) -> None:
        bad = [
            f"{key}.{name}"
            for key, module in self.family.modules.items()
            for name, p in module.named_parameters()
            if not torch.isfinite(p).all()
        ]
        if bad:
            guard = "" if self.cfg.guard.enabled else " with the guard off (guard.enabled=false)"
            text = (
                f"training aborted at step {step}: {len(bad)} weight tensors are no longer "
                f"finite{guard}, first {bad[0]}; lower optim.lr (now {self.cfg.optim.lr:g}), "
                "clip gradients (train.grad_clip=1.0) and keep the guard on"
            )
            self.rt.on_main(self.run_dir.diagnosis.write_text, text + "\n", encoding="utf-8")
            raise GuardAbort(text)

    def _write_final_metrics(self, final: dict[str, float], account: dict[str, Any]) -> None:
        record = {"step": self.step, "split": "val", **final, "goodput": account}
        record["precision"] = self.precision.record()
        out = json.dumps(record, indent=2) + "\n"
        self.rt.on_main(self.run_dir.final_metrics.write_text, out, encoding="utf-8")
