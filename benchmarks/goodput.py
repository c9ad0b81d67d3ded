"""Goodput of the quickstart under faults: where the wall time of a run goes.

The quickstart (examples/lm.yaml: a 0.8M-parameter char GPT, 800 steps) with checkpoints every
50 steps, evaluation every 100 (its own setting), and 3 injected faults: a NaN loss (skipped),
a x100 loss spike (skipped), and a crash of the process (SIGKILL) that genlab's launcher
(`--max-restarts 1`) answers by restarting it; the run resumes from its last healthy
checkpoint by itself. Each run goes through the real `genlab` command, once with background
checkpoint saves (the default) and once with `train.async_checkpoint=false`, after the
dataset cache is prepared (a fresh machine adds the preparation to the first run's `data`).

Prints one table: every bucket of metrics.json's `goodput` block, seconds and share of the
wall time, for both runs. Goal: goodput >= 95% of wall time. The machine's load average is
printed with it: other processes on the same cores slow every bucket down.

    .venv/bin/python benchmarks/goodput.py [--steps 800] [--crash-at 625] [--eval-every 100]
        [--variants both|background]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENLAB = str(Path(sys.executable).with_name("genlab"))
ROWS = [
    ("productive_s", "productive steps"),
    ("eval_s", "evaluation + samples"),
    ("checkpoint_save_s", "checkpoint save (loop's share)"),
    ("checkpoint_load_s", "checkpoint load"),
    ("data_s", "data preparation"),
    ("startup_s", "start-up (+ compile)"),
    ("skipped_s", "skipped steps"),
    ("rollback_s", "rollbacks (recomputed work)"),
    ("restart_s", "restart (lost work + downtime)"),
    ("other_s", "other (logs, plots, guard)"),
]


def run(tmp: Path, name: str, steps: int, crash_at: int, eval_every: int, *extra: str) -> dict:
    faults = (
        f"[{{step: {int(steps * 0.3)}, kind: nan_loss}}, "
        f"{{step: {int(steps * 0.55)}, kind: loss_spike, scale: 100}}, "
        f"{{step: {crash_at}, kind: crash}}]"
    )
    cmd = [GENLAB, "train", "examples/lm.yaml", f"train.max_steps={steps}"]
    cmd += ["train.checkpoint_every=50", f"train.eval_every={eval_every}", "train.progress=false"]
    cmd += [f"guard.inject={faults}", *extra, "--run-dir", str(tmp / name), "--max-restarts", "1"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    final = json.loads((tmp / name / "metrics.json").read_text())
    events = [json.loads(x) for x in (tmp / name / "events.jsonl").read_text().splitlines()]
    return {"goodput": final["goodput"], "events": events, "val": final["val/loss"]}


def load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument(
        "--crash-at",
        type=int,
        default=625,
        help="the step the process dies at (the step-600 checkpoint is healthy from 620 on)",
    )
    parser.add_argument("--eval-every", type=int, default=100, help="the quickstart's: 100")
    parser.add_argument(
        "--variants",
        choices=["both", "background"],
        default="both",
        help="both: background and synchronous saves; background: the default only",
    )
    args = parser.parse_args()
    subprocess.run([GENLAB, "data", "prepare", "examples/lm.yaml"], cwd=ROOT, check=True,
                   capture_output=True)  # fmt: skip
    before = load()
    with tempfile.TemporaryDirectory() as tmp:
        schedule = (args.steps, args.crash_at, args.eval_every)
        runs = {"background saves": run(Path(tmp), "async", *schedule)}
        if args.variants == "both":
            runs["synchronous saves"] = run(
                Path(tmp), "sync", *schedule, "train.async_checkpoint=false"
            )
    after = load()
    names = list(runs)
    restart = next(e for e in runs[names[0]]["events"] if e["kind"] == "restart")
    print(
        f"\ngoodput — quickstart, {args.steps} steps, checkpoints every 50, eval every "
        f"{args.eval_every}, "
        f"faults: NaN loss, x100 spike, crash at step {args.crash_at} (resumed from "
        f"{restart['detail']['from']}); load average before {before}, after {after}"
    )
    header = ["bucket", *names]
    rows = [header, ["wall time", *(f"{runs[n]['goodput']['wall_s']:.1f}s" for n in names)]]
    for key, label in ROWS:
        cells = []
        for n in names:
            g = runs[n]["goodput"]
            cells.append(f"{g[key]:.1f}s ({g[key] / g['wall_s']:.1%})")
        rows.append([label, *cells])
    rows.append(["goodput (goal >= 95%)", *(f"{runs[n]['goodput']['goodput']:.1%}" for n in names)])
    rows.append(["final val loss", *(f"{runs[n]['val']:.4f}" for n in names)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
