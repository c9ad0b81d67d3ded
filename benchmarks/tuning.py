"""Benchmark: how fast do TPE and GP find what random search finds, and what does pruning save?

Objective: the tiny character GPT (1 layer, 32 wide) trained for --steps steps on the built-in
python-docs corpus; minimise val/loss over optim.lr, schedule.warmup_steps, optim.weight_decay
and model.dropout. The model seed is fixed, so every study sees the same function; only the
sampler seed changes between studies. Everything goes through `genlab.tuning.run_study`.

Per study seed s (1..--studies):
  target_s  = best value random search finds in --trials trials;
  need(X)_s = trials sampler X needs to reach target_s (reported as ">N" when it never does).
Pruning: the random study is re-run with the same sampler seed and an ASHA / median pruner.
RandomSampler ignores history, so the pruned study proposes exactly the same configs and the
comparison isolates the pruner: steps saved = 1 - steps(pruned) / steps(unpruned), and the
change in best value (positive = worse).

Goals (from the issue): median need(TPE), need(GP) <= 10 with 30 trials; pruning saves >= 40%
of steps with a best value at most 1% worse.

    .venv/bin/python benchmarks/tuning.py                       # 5 studies x 30 trials x 100 steps
    .venv/bin/python benchmarks/tuning.py --studies 3 --trials 20 --steps 60 --jobs 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

SPACE = {
    "optim.lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
    "schedule.warmup_steps": {"type": "int", "low": 0, "high": 40},
    "optim.weight_decay": {"type": "float", "low": 0.0, "high": 0.3},
    "model.dropout": {"type": "float", "low": 0.0, "high": 0.3},
}
TINY = [
    "data.block_size=32",
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "train.batch_size=8",
    "train.eval_batches=4",
    "train.sample_tokens=20",
    "train.progress=false",
    "guard.healthy_after=3",
]
# (label, method, pruner)
STUDIES = [
    ("random", "random", "none"),
    ("tpe", "tpe", "none"),
    ("gp", "gp", "none"),
    ("random+asha", "random", "asha"),
    ("random+median", "random", "median"),
]


def run_one(label: str, method: str, pruner: str, seed: int, args: argparse.Namespace) -> dict:
    """One study; returns its trials' values and steps in trial order."""
    import optuna
    import torch
    from rich.console import Console

    from genlab.tuning import run_study

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.jobs))
    root = Path(args.workdir)
    cfg_path = root / "bench.yaml"
    if not cfg_path.exists():
        cfg_path.write_text(yaml.safe_dump({"name": "bench", "tune": {"space": SPACE}}))
    eval_every = max(1, args.steps // args.evals)
    overrides = [
        *TINY,
        f"train.max_steps={args.steps}",
        f"train.eval_every={eval_every}",
        f"train.checkpoint_every={args.steps}",
        f"train.sample_every={args.steps}",
        f"tune.method={method}",
        f"tune.n_trials={args.trials}",
        f"tune.seed={seed}",
        f"tune.pruner={pruner}",
        f"tune.startup_trials={args.startup}",
    ]
    study_dir = root / f"{label}-{seed}"
    t0 = time.perf_counter()
    run_study(cfg_path, overrides, study_dir, workers=1, console=Console(quiet=True))
    seconds = time.perf_counter() - t0
    storage = f"sqlite:///{study_dir / 'study.db'}"
    trials = optuna.load_study(study_name="bench", storage=storage).get_trials()
    return {
        "label": label,
        "seed": seed,
        "values": [t.value if t.state.name == "COMPLETE" else None for t in trials],
        "steps": [int(t.user_attrs.get("steps", 0)) for t in trials],
        "states": [t.state.name for t in trials],
        "seconds": seconds,
    }


def trials_to_reach(values: list[float | None], target: float) -> int | None:
    for i, v in enumerate(values, start=1):
        if v is not None and v <= target:
            return i
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--studies", type=int, default=5, help="study (sampler) seeds")
    p.add_argument("--trials", type=int, default=30, help="trials per study")
    p.add_argument("--steps", type=int, default=100, help="training steps per trial")
    p.add_argument("--evals", type=int, default=5, help="evaluations per run (pruning points)")
    p.add_argument("--startup", type=int, default=5, help="random trials before TPE/GP model")
    p.add_argument("--jobs", type=int, default=1, help="studies run in parallel processes")
    p.add_argument("--workdir", help="keep the studies here (default: a temp dir)")
    args = p.parse_args()
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="genlab-tune-bench-")
        args.workdir = tmp.name
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    seeds = list(range(1, args.studies + 1))
    jobs = [(label, m, pr, s) for s in seeds for label, m, pr in STUDIES]
    t0 = time.perf_counter()
    results: dict[tuple[str, int], dict] = {}
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(run_one, *j, args) for j in jobs]
            for f in futures:
                r = f.result()
                results[r["label"], r["seed"]] = r
                print(
                    f"  done {r['label']} seed {r['seed']} ({r['seconds']:.0f}s)", file=sys.stderr
                )
    else:
        for j in jobs:
            r = run_one(*j, args)
            results[r["label"], r["seed"]] = r
            print(f"  done {r['label']} seed {r['seed']} ({r['seconds']:.0f}s)", file=sys.stderr)
    wall = time.perf_counter() - t0
    print_table(results, seeds, args, wall)
    if tmp is not None:
        tmp.cleanup()


def _best(r: dict) -> float:
    vals = [v for v in r["values"] if v is not None]
    return min(vals) if vals else float("inf")


def print_table(results: dict, seeds: list[int], args: argparse.Namespace, wall: float) -> None:
    n = args.trials
    rows = []
    targets = {s: _best(results["random", s]) for s in seeds}
    for label in ("tpe", "gp"):
        needs = [trials_to_reach(results[label, s]["values"], targets[s]) for s in seeds]
        as_num = [x if x is not None else n + 1 for x in needs]
        med = statistics.median(as_num)
        shown = ", ".join(str(x) if x is not None else f">{n}" for x in needs)
        medtxt = f">{n}" if med > n else f"{med:g}"
        goal = "yes" if med <= min(10, n) else "no"
        rows.append(
            (f"{label}: trials to reach random's best of {n}", f"{medtxt} (per seed: {shown})",
             "<= 10", goal)
        )  # fmt: skip
    for label in ("random+asha", "random+median"):
        saved, change = [], []
        for s in seeds:
            full, pruned = results["random", s], results[label, s]
            saved.append(1 - sum(pruned["steps"]) / max(1, sum(full["steps"])))
            change.append((_best(pruned) - _best(full)) / abs(_best(full)) * 100)
        sv, ch = statistics.median(saved), statistics.median(change)
        rows.append(
            (f"{label}: training steps saved", f"{sv:.0%} (per seed: "
             + ", ".join(f"{x:.0%}" for x in saved) + ")", ">= 40%", "yes" if sv >= 0.4 else "no")
        )  # fmt: skip
        rows.append(
            (f"{label}: best value change (+ = worse)", f"{ch:+.2f}% (per seed: "
             + ", ".join(f"{x:+.2f}%" for x in change) + ")", "<= +1%", "yes" if ch <= 1 else "no")
        )  # fmt: skip
    best_random = statistics.median(targets.values())
    print(
        f"\ngenlab tune benchmark: tiny GPT, {args.steps} steps/trial, {args.evals} evals/run, "
        f"{n} trials/study, {len(seeds)} study seeds, TPE/GP startup {args.startup}, "
        f"jobs {args.jobs}, wall {wall / 60:.1f} min; median random best val/loss "
        f"{best_random:.4f}\n"
    )
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"{'measure':<{width}}  {'median':<{vwidth}}  {'goal':<7}  met")
    for name, value, goal, met in rows:
        print(f"{name:<{width}}  {value:<{vwidth}}  {goal:<7}  {met}")


if __name__ == "__main__":
    main()
