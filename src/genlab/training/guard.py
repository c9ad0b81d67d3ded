"""The stability guard: it sees every optimizer step before it is applied and decides whether
to apply it.

Detection (before `optimizer.step()`, so a bad step is never applied):
  nonfinite_loss / nonfinite_grad   NaN or inf in the loss or the gradient norm
  loss_spike / grad_explosion       robust z-score (median and MAD of the last `window`
                                    healthy values) above `loss_z` / `grad_z`; an explosion
                                    is also at least `grad_ratio` x the median (grad norms are
                                    right-skewed: a healthy batch reaches 2x now and then)
Response, escalating within an episode of nearby events (ladder, configurable):
  skip → lr_cooldown → rollback, and abort with a diagnosis after `abort_after` events within
  `abort_window` steps or more than `max_rollbacks` rollbacks.

The guard holds only numbers (histories, counters, the cooldown); the training loop owns the
model, applies the actions and keeps the snapshots. Everything here is in `state_dict()` so a
resumed run decides exactly as the uninterrupted one would.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import torch

from genlab.config import ExperimentConfig, GuardConfig

MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution × this = its standard deviation


class RobustWindow:
    """The last `size` healthy values of a signal, and robust z-scores against them."""

    def __init__(self, size: int, min_scale: float = 0.05):
        self.values: deque[float] = deque(maxlen=size)
        self.min_scale = min_scale

    def zscore(self, x: float) -> float:
        median, scale = self.center_and_scale()
        return (x - median) / scale

    def center_and_scale(self) -> tuple[float, float]:
        """The window's median and the z-score's scale (1.4826 x MAD, floored)."""
        # Plain Python on a few hundred floats: cheaper per step than building tensors.
        # median_low: of an even count, the lower middle value (as torch.median takes it).
        median = statistics.median_low(self.values)
        mad = statistics.median_low([abs(v - median) for v in self.values])
        # A floor on the scale (a share of the median) keeps a nearly flat history from
        # making every wiggle a spike.
        return median, max(MAD_TO_SIGMA * mad, self.min_scale * abs(median), 1e-12)

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class Verdict:
    kind: str  # nonfinite_loss | nonfinite_grad | loss_spike | grad_explosion | ...
    action: str  # skip | lr_cooldown | rollback | abort
    detail: dict[str, Any] = field(default_factory=dict)


class Guard:
    """One per optimizer (updater); `name` says which, and faults in `cfg.inject` go to the
    updater they target (the first updater, `primary`, when they name none)."""

    def __init__(
        self,
        cfg: GuardConfig,
        name: str = "model",
        primary: str | None = None,
        watch_divergence: bool = True,
    ):
        self.cfg = cfg
        self.name = name
        # A loss that should fall (not an adversarial one) is also checked against where it
        # started: early divergence happens before the rolling window has any history.
        self.watch_divergence = watch_divergence and cfg.diverge_factor is not None
        self.initial_loss: float | None = None
        self.loss_window = RobustWindow(cfg.window, cfg.min_scale)
        self.grad_window = RobustWindow(cfg.window, cfg.min_scale)
        self.episode_events = 0
        self.last_event_step = -(10**9)
        self.event_steps: deque[int] = deque()
        self.cooldown_start: int | None = None
        self.lr_scale = 1.0  # persistent: each rollback multiplies it by rollback_lr_factor
        self.clean_streak = 0
        self.counts: Counter[str] = Counter()  # by action and by kind
        self.history: list[dict[str, Any]] = []  # every verdict, for the diagnosis
        self.lost_steps = 0
        self.lost_seconds = 0.0
        primary = primary or name
        self._faults = {(f.step, f.kind): f for f in cfg.inject if (f.target or primary) == name}

    # -- fault injection (drills) -------------------------------------------------------------

    def inject_loss(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        """Apply the faults planned for `step` (the loop calls this for the targeted updater)."""
        if (step, "nan_loss") in self._faults:
            return loss * float("nan")
        fault = self._faults.get((step, "loss_spike"))
        if fault is not None:
            return loss * fault.scale
        return loss

    def inject_grads(self, step: int, params: list[torch.nn.Parameter]) -> None:
        if (step, "inf_grad") in self._faults:
            for p in params:
                if p.grad is not None:
                    p.grad.view(-1)[0] = float("inf")
                    return

    # -- detection and the ladder --------------------------------------------------------------

    def inspect(self, step: int, loss: float, grad_norm: float) -> Verdict | None:
        """None when the step is healthy (its values then join the statistics)."""
        if not self.cfg.enabled:
            return None
        kind, detail = self._detect(loss, grad_norm)
        if kind is None:
            if self.initial_loss is None:
                self.initial_loss = loss
            self.loss_window.values.append(loss)
            self.grad_window.values.append(grad_norm)
            self.clean_streak += 1
            return None
        detail.update(loss=loss, grad_norm=grad_norm)
        return self._escalate(step, kind, detail, can_skip=True)

    def report(self, step: int, kind: str, detail: dict[str, Any]) -> Verdict | None:
        """An event found outside the step (mode or posterior collapse, an overpowering
        discriminator): the same ladder, except that there is no step to skip, so a `skip`
        rung becomes the next rung up."""
        if not self.cfg.enabled:
            return None
        return self._escalate(step, kind, dict(detail), can_skip=False)

    def _escalate(self, step: int, kind: str, detail: dict[str, Any], can_skip: bool) -> Verdict:
        self.clean_streak = 0
        if step - self.last_event_step > self.cfg.escalate_within:
            self.episode_events = 0
        self.episode_events += 1
        self.last_event_step = step
        self.event_steps.append(step)
        while self.event_steps and self.event_steps[0] <= step - self.cfg.abort_window:
            self.event_steps.popleft()
        ladder = list(self.cfg.ladder)
        if not can_skip:
            ladder = [a for a in ladder if a != "skip"] or ["lr_cooldown"]
        action = ladder[min(self.episode_events - 1, len(ladder) - 1)]
        detail["episode_event"] = self.episode_events
        if len(self.event_steps) >= self.cfg.abort_after:
            action = "abort"
            detail["reason"] = (
                f"{len(self.event_steps)} events within {self.cfg.abort_window} steps "
                f"(guard.abort_after={self.cfg.abort_after})"
            )
        elif action == "rollback" and self.counts["rollback"] >= self.cfg.max_rollbacks:
            action = "abort"
            detail["reason"] = (
                f"a rollback was needed after {self.counts['rollback']} rollbacks "
                f"(guard.max_rollbacks={self.cfg.max_rollbacks})"
            )
        verdict = Verdict(kind, action, detail)
        self.counts[action] += 1
        self.counts[f"kind:{kind}"] += 1
        self.history.append({"step": step, "kind": kind, "action": action})
        if action == "lr_cooldown":
            self.cooldown_start = step
        if action == "rollback":
            # The same lr led here once: returning to it would likely diverge again.
            self.lr_scale *= self.cfg.rollback_lr_factor
            detail["lr_scale"] = self.lr_scale
        return verdict

    def _detect(self, loss: float, grad_norm: float) -> tuple[str | None, dict[str, Any]]:
        if not math.isfinite(loss):
            return "nonfinite_loss", {}
        if not math.isfinite(grad_norm):
            return "nonfinite_grad", {}
        if len(self.loss_window) >= self.cfg.min_history:
            z = self.loss_window.zscore(loss)
            if z > self.cfg.loss_z:
                return "loss_spike", {"z": round(z, 2), "threshold": self.cfg.loss_z}
        if len(self.grad_window) >= self.cfg.min_history:
            median, scale = self.grad_window.center_and_scale()
            z = (grad_norm - median) / scale
            # Both: a z-score alone flags a 2x batch after a quiet stretch (MAD small), and
            # with gradient clipping such a step is harmless anyway.
            if z > self.cfg.grad_z and grad_norm >= self.cfg.grad_ratio * median:
                return "grad_explosion", {
                    "z": round(z, 2),
                    "threshold": self.cfg.grad_z,
                    # None for an all-zero window (events.jsonl stays standard JSON).
                    "ratio": round(grad_norm / median, 2) if median > 0 else None,
                }
        if self.watch_divergence and self.initial_loss is not None:
            limit = self.cfg.diverge_factor * self.initial_loss
            if self.initial_loss > 0 and loss > limit:
                return "loss_divergence", {"initial_loss": self.initial_loss, "limit": limit}
        return None, {}

    def lr_multiplier(self, step: int) -> float:
        """The guard's factor on the scheduled lr: `lr_scale` (lowered by rollbacks) times
        the cooldown — `cooldown_factor` for `cooldown_steps` after a cooldown, then a linear
        ramp back over `ramp_steps`."""
        return self.lr_scale * self._cooldown(step)

    def _cooldown(self, step: int) -> float:
        if self.cooldown_start is None:
            return 1.0
        since = step - self.cooldown_start
        low = self.cfg.cooldown_factor
        if since <= self.cfg.cooldown_steps:
            return low
        ramp = since - self.cfg.cooldown_steps
        if ramp >= self.cfg.ramp_steps:
            self.cooldown_start = None
            return 1.0
        return low + (1.0 - low) * ramp / self.cfg.ramp_steps

    def windows(self) -> tuple[list[float], list[float]]:
        """The detection statistics (a rollback restores them with the weights, so the
        restored model is not judged against the diverged run's values)."""
        return list(self.loss_window.values), list(self.grad_window.values)

    def restore_windows(self, windows: tuple[list[float], list[float]]) -> None:
        self.loss_window.values.clear()
        self.loss_window.values.extend(windows[0])
        self.grad_window.values.clear()
        self.grad_window.values.extend(windows[1])

    def clean_since(self, step: int, now: int) -> bool:
        """True when no event happened after `step` up to `now`, and enough steps passed."""
        return now - step >= self.cfg.healthy_after and self.last_event_step <= step

    # -- bookkeeping ----------------------------------------------------------------------------

    def metrics(self) -> dict[str, int]:
        return {
            "guard/skipped_steps": sum(self.counts[a] for a in ("skip", "lr_cooldown", "rollback")),
            "guard/lr_cooldowns": self.counts["lr_cooldown"],
            "guard/rollbacks": self.counts["rollback"],
            "guard/events": sum(v for k, v in self.counts.items() if k.startswith("kind:")),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "loss_window": list(self.loss_window.values),
            "grad_window": list(self.grad_window.values),
            "episode_events": self.episode_events,
            "last_event_step": self.last_event_step,
            "event_steps": list(self.event_steps),
            "cooldown_start": -1 if self.cooldown_start is None else self.cooldown_start,
            "clean_streak": self.clean_streak,
            "lr_scale": self.lr_scale,
            "initial_loss": -1.0 if self.initial_loss is None else self.initial_loss,
            "counts": dict(self.counts),
            "history": list(self.history),
            "lost_steps": self.lost_steps,
            "lost_seconds": self.lost_seconds,
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.loss_window.values.clear()
        self.loss_window.values.extend(s["loss_window"])
        self.grad_window.values.clear()
        self.grad_window.values.extend(s["grad_window"])
        self.episode_events = s["episode_events"]
        self.last_event_step = s["last_event_step"]
        self.event_steps = deque(s["event_steps"])
        self.cooldown_start = None if s["cooldown_start"] < 0 else s["cooldown_start"]
        self.clean_streak = s["clean_streak"]
        self.lr_scale = float(s.get("lr_scale", 1.0))
        initial = float(s.get("initial_loss", -1.0))
        self.initial_loss = None if initial < 0 else initial
        self.counts = Counter(s["counts"])
        self.history = list(s["history"])
        self.lost_steps = s["lost_steps"]
        self.lost_seconds = s["lost_seconds"]


def diagnose(
    cfg: ExperimentConfig, verdict: Verdict, step: int, guard: Guard, data_note: str
) -> str:
    """What happened, where, on which data, what was tried, and what to change."""
    tried = Counter(h["action"] for h in guard.history if h["action"] != "abort")
    kinds = Counter(h["kind"] for h in guard.history)
    first = guard.history[0]["step"] if guard.history else step
    lines = [
        f"training aborted by the stability guard at step {step}: {verdict.kind}"
        f" ({verdict.detail.get('reason', 'limit reached')})",
        f"  what happened: {dict(kinds)} since step {first}; last loss "
        f"{verdict.detail.get('loss')}, grad norm {verdict.detail.get('grad_norm')}",
        f"  which data: {data_note}",
        f"  what was tried: {dict(tried) or 'nothing'}",
        "  what to try:",
    ]
    lr = cfg.optim.lr
    lines.append(f"    - lower the learning rate: optim.lr={lr / 3:.3g} (now {lr:g})")
    if cfg.train.grad_clip == 0:
        lines.append("    - clip gradients: train.grad_clip=1.0 (now off)")
    elif cfg.train.grad_clip > 1.0:
        lines.append(
            f"    - clip gradients harder: train.grad_clip=1.0 (now {cfg.train.grad_clip})"
        )
    warm = cfg.schedule.warmup_steps
    lines.append(f"    - warm up longer: schedule.warmup_steps={max(100, warm * 2)} (now {warm})")
    if cfg.train.precision != "fp32":
        lines.append(
            f"    - train in full precision: train.precision=fp32 (now {cfg.train.precision})"
        )
    if cfg.guard.inject:
        n = len(cfg.guard.inject)
        lines.append(f"    - note: {n} fault(s) were injected on purpose (guard.inject)")
    return "\n".join(lines)
