"""What the stability guard buys, on the quickstart model (char GPT on CPython's docs).

1. Faults injected on purpose (NaN loss at two steps, a x100 loss spike): the run completes
   and its final val loss is within 2% of the clean run with the same seed.
2. A learning rate high enough that the unguarded loop diverges (found by a sweep and printed):
   with the guard on, the run completes with a finite val loss (ratio to the clean run shown).
3. The guard's overhead on throughput when nothing goes wrong (goal <= 3%), and its check
   (`Guard.inspect` with full windows) timed alone against the step.
4. The share of run 1's training-step time spent on steps whose updates were kept (>= 95%);
   evaluation and checkpoint time count for neither side. (Goodput on wall time, every cost
   counted, is benchmarks/goodput.py's.)

    .venv/bin/python benchmarks/stability.py [--steps 300] [--lrs 0.01,0.03,0.1,0.3]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path

from genlab import config
from genlab.config import GuardConfig
from genlab.errors import GuardAbort
from genlab.track.logs import read_jsonl
from genlab.training.guard import Guard
from genlab.training.loop import train

BASE = [
    "data.block_size=128",
    "model.n_layer=4",
    "model.n_head=4",
    "model.n_embd=128",
    "train.batch_size=32",
    "train.eval_batches=16",
    "train.progress=false",
    "optim.lr=2e-3",
    "schedule.warmup_steps=50",
]


def run(tmp: Path, name: str, *overrides: str) -> dict:
    cfg = config.load(None, [*BASE, *overrides])
    out = tmp / name
    try:
        result = train(cfg, out, overwrite=True)
        val, aborted = result.final_metrics.get("val/loss", math.nan), False
    except GuardAbort:
        val, aborted = math.nan, True
    records = read_jsonl(out / "metrics.jsonl")
    events = read_jsonl(out / "events.jsonl")
    state_kept, state_lost = _step_seconds(out)
    wall = records[-1]["time"] if records else math.nan
    steady = records[10:] or records
    tokens = cfg.train.batch_size * cfg.data.block_size
    rate = (len(steady) - 1) * tokens / (steady[-1]["time"] - steady[0]["time"])
    return {
        "val": val,
        "aborted": aborted,
        "events": len(events),
        "actions": sorted({e["action"] for e in events}),
        "wall": wall,
        "kept": state_kept,
        "lost": state_lost,
        "tokens_per_s": rate,
        "first_loss": records[0]["train/loss"] if records else math.nan,
    }


def _step_seconds(run_dir: Path) -> tuple[float, float]:
    """Wall time of training steps whose updates were kept, and of steps the guard threw
    away (skipped or rolled back), from the final checkpoint's training state."""
    import torch

    ckpts = sorted(
        (run_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1])
    )
    if not ckpts:
        return math.nan, math.nan
    state = torch.load(ckpts[-1] / "state.pt", weights_only=True)
    lost = sum(g["lost_seconds"] for g in state["guards"].values())
    return float(state["kept_seconds"]), float(lost)


def diverged(r: dict) -> bool:
    return r["aborted"] or not math.isfinite(r["val"]) or r["val"] > r["first_loss"]


def inspect_seconds(cfg: GuardConfig, calls: int = 2000) -> float:
    """Seconds one `Guard.inspect` takes with full windows (what every step pays)."""
    rng = random.Random(0)
    guard = Guard(cfg)
    for i in range(cfg.window):
        guard.inspect(i + 1, 2.0 + 0.1 * rng.random(), 1.0 + 0.1 * rng.random())
    values = [(2.0 + 0.1 * rng.random(), 1.0 + 0.1 * rng.random()) for _ in range(calls)]
    start = time.perf_counter()
    for i, (loss, grad_norm) in enumerate(values):
        guard.inspect(cfg.window + i + 1, loss, grad_norm)
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lrs", default="0.01,0.03,0.1,0.3,1.0")
    args = parser.parse_args()
    steps = [f"train.max_steps={args.steps}", f"train.eval_every={args.steps // 3}"]
    a, b, c = args.steps // 3, args.steps // 2, 2 * args.steps // 3
    faults = (
        f"guard.inject=[{{step: {a}, kind: nan_loss}}, {{step: {b}, kind: nan_loss}}, "
        f"{{step: {c}, kind: loss_spike, scale: 100}}]"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        clean = run(tmp, "clean", *steps)
        faulty = run(tmp, "faulty", *steps, faults)
        rows.append(
            (
                "1 injected faults (2 NaN, x100 spike)",
                f"val {faulty['val']:.4f} vs clean {clean['val']:.4f}",
                f"{abs(faulty['val'] / clean['val'] - 1):.2%} (goal <= 2%)",
                f"events {faulty['events']} {faulty['actions']}",
            )
        )
        # 2: sweep the lr without the guard (and without clipping, so nothing saves it)
        unguarded = ["guard.enabled=false", "train.grad_clip=0"]
        found = None
        for lr in [float(x) for x in args.lrs.split(",")]:
            r = run(tmp, f"unguarded-{lr}", *steps, *unguarded, f"optim.lr={lr}")
            print(
                f"  unguarded lr={lr:g}: val {r['val']:.4f} ({'diverged' if diverged(r) else 'ok'})"
            )
            if diverged(r):
                found = (lr, r)
                break
        if found is None:
            rows.append(("2 high lr", "no lr in the sweep diverged", "-", "-"))
        else:
            lr, bad = found
            guarded = run(tmp, f"guarded-{lr}", *steps, "train.grad_clip=0", f"optim.lr={lr}")
            outcome = "aborted (exit 3)" if guarded["aborted"] else f"val {guarded['val']:.4f}"
            rows.append(
                (
                    f"2 lr={lr:g} without guard: val {bad['val']:.4f}",
                    f"with guard: {outcome}",
                    f"ratio to clean {guarded['val'] / clean['val']:.3f}",
                    f"events {guarded['events']} {guarded['actions']}",
                )
            )
        # 3: overhead, alternating to share machine noise
        on, off = [], []
        for i in range(2):
            on.append(run(tmp, f"on{i}", *steps)["tokens_per_s"])
            off.append(run(tmp, f"off{i}", *steps, "guard.enabled=false")["tokens_per_s"])
        on_rate, off_rate = sum(on) / len(on), sum(off) / len(off)
        overhead = 1 - on_rate / off_rate
        # Whole runs differ by several percent from run to run on a shared machine; the
        # guard's own decision per step, timed alone, says what it costs without that noise.
        base = config.load(None, BASE)
        check = inspect_seconds(base.guard)
        step = base.train.batch_size * base.data.block_size / off_rate
        rows.append(
            (
                "3 guard overhead, clean run",
                f"{on_rate:,.0f} vs {off_rate:,.0f} tokens/s",
                f"{overhead:.2%} (goal <= 3%)",
                f"its check alone: {check * 1e6:.0f} us of a {step * 1e3:.0f} ms step "
                f"({check / step:.3%})",
            )
        )
        steps_time = faulty["kept"] + faulty["lost"]
        kept_share = faulty["kept"] / steps_time
        rows.append(
            (
                "4 share of step time kept, run 1 (kept / all step time)",
                f"{faulty['kept']:.1f}s kept of {steps_time:.1f}s",
                f"{kept_share:.1%} (goal >= 95%)",
                "-",
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    print(f"\nstability guard — {args.steps} steps, quickstart model")
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    print(json.dumps({"clean_val": clean["val"], "faulty_val": faulty["val"]}))


if __name__ == "__main__":
    main()
