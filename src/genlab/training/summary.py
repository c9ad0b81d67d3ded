"""What the training loop prints and derives at evaluations and at the end: the eval line,
the closing summary with the guard's account, fine-tuning's gain and forgetting, and the
early-stopping metric check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from genlab.config import ExperimentConfig, TrainConfig
from genlab.errors import ConfigError
from genlab.track.console import rate_text
from genlab.training.family import Family
from genlab.training.guard import Guard


def gain_and_forgetting(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Fine-tuning's two numbers: how much the new data's val loss fell (gain) and how much
    the original data's val loss rose (forgetting)."""
    out = {"finetune/val_loss_before": before["val/loss"]}
    out["finetune/gain"] = before["val/loss"] - after["val/loss"]
    if "val_original/loss" in before:
        out["finetune/val_original_loss_before"] = before["val_original/loss"]
        out["finetune/forgetting"] = after["val_original/loss"] - before["val_original/loss"]
    return out


def check_early_stopping_metric(cfg: ExperimentConfig, family: Family) -> None:
    es = cfg.train.early_stopping
    if es is None:
        return
    known = sorted(family.evaluate().keys())
    if es.metric not in known:
        raise ConfigError(
            f"train.early_stopping.metric {es.metric!r} is not a metric of model.family "
            f"{cfg.model.family!r}; use one of {known}"
        )


def print_eval(
    console: Console, r: dict[str, Any], last_val: dict[str, float], throughput_key: str
) -> None:
    train = "  ".join(
        f"{k[6:]} {v:.4f}" for k, v in r.items() if k.startswith("train/") and k.endswith("loss")
    )
    val = "  ".join(f"{k} {_number(v)}" for k, v in last_val.items())
    rate = rate_text(throughput_key, r[throughput_key])
    console.print(f"step {r['step']:>6} | {train} | {val} | {rate}")


def _number(value: float) -> str:
    """Counts (tokens, bytes) as whole numbers, measurements to four decimals."""
    return f"{value:,}" if isinstance(value, int) else f"{value:.4f}"


def print_summary(
    console: Console,
    guards: dict[str, Guard],
    final: dict[str, float],
    step: int,
    root: Path,
    account: dict[str, Any],
    train: TrainConfig,
) -> None:
    kinds: dict[str, int] = {}
    actions: dict[str, int] = {}
    for g in guards.values():
        for k, v in g.counts.items():
            target = kinds if k.startswith("kind:") else actions
            key = k[5:] if k.startswith("kind:") else k
            target[key] = target.get(key, 0) + v
    lost_steps = sum(g.lost_steps for g in guards.values())
    lost_seconds = sum(g.lost_seconds for g in guards.values())
    shown = ", ".join(f"{k} {_number(v)}" for k, v in final.items())
    console.print(f"[bold]done[/]: step {step}, {shown} → {root}")
    if kinds:
        console.print(
            f"stability: events {kinds}, actions {actions}, steps lost {lost_steps}, "
            f"time lost {lost_seconds:.1f}s of {account['wall_s']:.1f}s"
        )
    else:
        console.print("stability: no guard events")
    console.print(goodput_line(account))
    if (hint := evaluation_hint(account, train, step)) is not None:
        console.print(hint)


EVAL_HINT_SHARE = 0.05  # evaluation's share of the wall time above which the summary says why


def evaluation_hint(account: dict[str, Any], train: TrainConfig, steps: int) -> str | None:
    """One line on how to spend less on evaluation, when it took more than EVAL_HINT_SHARE of
    the wall time and ran during the run too (the final evaluation always runs). An
    evaluation batch is one forward pass, about a third of a training step at any model
    size, so eval_batches / (3 x eval_every) of the step time goes to it."""
    wall = account["wall_s"]
    if wall <= 0 or account["eval_s"] <= EVAL_HINT_SHARE * wall or train.eval_every >= steps:
        return None
    return (
        f"hint: evaluation and samples took {account['eval_s'] / wall:.1%} of the wall time "
        f"({train.eval_batches} batches every {train.eval_every} steps, each about a third of "
        "a step); raise train.eval_every or train.sample_every, or lower train.eval_batches, "
        "to spend less"
    )


def goodput_line(account: dict[str, Any]) -> str:
    """The goodput block of metrics.json in one line: the share, then where the rest went."""
    names = {
        "eval_s": "eval",
        "checkpoint_save_s": "checkpoint save",
        "checkpoint_load_s": "load",
        "data_s": "data",
        "startup_s": "start-up",
        "skipped_s": "skipped steps",
        "rollback_s": "rollbacks",
        "restart_s": "restarts",
        "other_s": "other",
    }
    parts = [f"{label} {account[key]:.1f}s" for key, label in names.items()]
    n = account["restarts"]
    restarts = f" ({n} restart{'s' if n != 1 else ''})" if n else ""
    return (
        f"goodput {account['goodput']:.1%} of {account['wall_s']:.1f}s wall: steps "
        f"{account['productive_s']:.1f}s, " + ", ".join(parts) + restarts
    )
