"""Benchmark: does Bayesian search beat random search on genlab's objective, and what does
pruning save and cost?

Objective: a character GPT trained for --steps steps on the built-in python-docs corpus
(--size tiny: 1 layer, 32 wide; --size quickstart: examples/lm.yaml's data, model and batch,
4 layers, 128 wide, far slower); minimise val/loss over optim.lr (log), schedule.warmup_steps,
optim.weight_decay and model.dropout. The experiment seed is fixed, so every study sees the
same function; the sampler seed (tune.seed) changes between the --studies independent studies.
Everything goes through `genlab.tuning.run_study` with genlab's defaults (TPE, GP and CMA-ES
startup trials, pruner warmup from the lr schedule). The runs' PNG plots are skipped in every
process (about half of a tiny run's time; they are outputs, not part of the objective).

Per study s (each sampler with a seed of its own):
  target_s  = best value random search finds in --trials trials;
  need(X)_s = trials sampler X needs to reach target_s (">N" when it never does).
Pruning: each pruner runs with the random study's sampler seed. The sampler is seeded per trial
number, so trial n of the pruned study is trial n of the unpruned one (checked): steps and wall
time saved and the change of the final best compare the same configurations, and a pruned
trial "would have won" when its unpruned twin beat the pruned study's final best.
Parallel: GP (what the default `tune.method: auto` picks for this space) and TPE, each with
`--workers 3` against the same sampler with one worker, same total trials: the trials (by
number) the 3 workers need to reach the single worker's best, and duplicate points.

Goals (issue 20): median need(TPE), need(GP) <= 12; pruning saves >= 40% of steps at <= 0.5%
worse final best; 3 workers reach the single worker's best within the same total trials.

    .venv/bin/python benchmarks/tuning.py                  # 5 studies x 30 trials x 100 steps
    .venv/bin/python benchmarks/tuning.py --studies 3 --trials 20 --steps 60 --parts sampler
"""

from __future__ import annotations

import argparse
import json
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
]
QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "lm.yaml"
SAMPLERS = ("random", "tpe", "gp", "cmaes", "tpe-joint10")
# label -> (tune.method, extra overrides); tpe-joint10 is TPE as Optuna sets it up by default
# (genlab's before issue 20): one joint model of all params, 10 random startup trials.
METHODS = {
    "tpe-joint10": ("tpe", ["tune.multivariate=true", "tune.startup_trials=10"]),
}
PRUNERS = ("median", "percentile", "asha", "hyperband")
WORKERS = 3
PARALLEL = ("gp", "tpe")  # samplers also run with WORKERS workers
# Imported by every benchmark process (PYTHONPATH), the spawned tuning workers included.
NO_PLOTS = "import genlab.track.plots as p\np.plot_run = lambda *args, **kwargs: None\n"


def _skip_run_plots() -> None:
    import genlab.track.plots

    genlab.track.plots.plot_run = lambda *args, **kwargs: None


def write_config(root: Path, size: str) -> Path:
    """bench.yaml: quickstart is examples/lm.yaml's data, model and batch; tiny is TINY over
    the defaults (as overrides). Written whole (rename), as several calls may share --workdir."""
    path = root / f"bench-{size}.yaml"
    if not path.exists():
        base = yaml.safe_load(QUICKSTART.read_text()) if size == "quickstart" else {}
        base.update(name="bench", tune={"space": SPACE})
        tmp = root / f".bench-{size}-{os.getpid()}.yaml"
        tmp.write_text(yaml.safe_dump(base))
        tmp.replace(path)
    return path


def sampler_seed(label: str, study: int) -> int:
    """Random search and its pruned twins share a seed; every other sampler draws its own
    (trial n's sampler seed depends on tune.seed and n only, so a shared seed would give TPE,
    GP and CMA-ES random search's very startup trials, and its best if that came early)."""
    kinds = ["random", "tpe", "gp", "cmaes", f"tpe-x{WORKERS}", f"gp-x{WORKERS}"]
    kind = "tpe" if label == "tpe-joint10" else label.split("+")[0]  # paired with tpe
    return 1000 * kinds.index(kind) + study


def run_one(label: str, method: str, pruner: str, workers: int, seed: int, args) -> dict:
    """One study; its trials' params, values, steps and states in trial-number order."""
    import optuna
    import torch
    from rich.console import Console

    from genlab.tuning import run_study

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.jobs))
    root = Path(args.workdir)
    cfg_path = write_config(root, args.size)
    eval_every = max(1, args.steps // args.evals)
    overrides = [
        *(TINY if args.size == "tiny" else []),
        "train.sample_tokens=20",
        "train.progress=false",
        "guard.healthy_after=3",
        f"train.max_steps={args.steps}",
        f"train.eval_every={eval_every}",
        f"train.checkpoint_every={args.steps}",
        f"train.sample_every={args.steps}",
        f"tune.method={method}",
        f"tune.n_trials={args.trials}",
        f"tune.seed={sampler_seed(label, seed)}",
        f"tune.pruner={pruner}",
        *METHODS.get(label, (method, []))[1],
    ]
    study_dir = root / f"{label}-{seed}"
    done = study_dir / "benchmark.json"  # a finished study of an earlier call in --workdir
    if done.is_file():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    run_study(cfg_path, overrides, study_dir, workers=workers, console=Console(quiet=True))
    seconds = time.perf_counter() - t0
    if workers > 1:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        storage = JournalStorage(JournalFileBackend(str(study_dir / "journal.log")))
    else:
        storage = f"sqlite:///{study_dir / 'study.db'}"
    trials = optuna.load_study(study_name="bench", storage=storage).get_trials()
    trials = [t for t in trials if t.state.name != "WAITING"]
    result = {
        "label": label,
        "seed": seed,
        "params": [t.params for t in trials],
        "values": [t.value if t.state.name == "COMPLETE" else None for t in trials],
        "full": [t.state.name == "COMPLETE" for t in trials],
        "steps": [int(t.user_attrs.get("steps", 0)) for t in trials],
        "seconds": seconds,
    }
    done.write_text(json.dumps(result))
    return result


def trials_to_reach(values: list[float | None], target: float) -> int | None:
    for i, v in enumerate(values, start=1):
        if v is not None and v <= target:
            return i
    return None


def _best(r: dict) -> float:
    vals = [v for v in r["values"] if v is not None]
    return min(vals) if vals else float("inf")


def _jobs(args) -> tuple[list[tuple], list[tuple]]:
    """In-process studies (may share a pool) and multi-worker studies (run one at a time)."""
    seeds = range(1, args.studies + 1)
    single, multi = [], []
    for s in seeds:
        if "sampler" in args.parts or "pruner" in args.parts:
            single.append(("random", "random", "none", 1, s))
        if "sampler" in args.parts:
            single += [(m, METHODS.get(m, (m,))[0], "none", 1, s) for m in SAMPLERS[1:]]
        if "pruner" in args.parts:
            single += [(f"random+{p}", "random", p, 1, s) for p in PRUNERS]
        if "parallel" in args.parts:
            if "sampler" not in args.parts:
                single += [(m, m, "none", 1, s) for m in PARALLEL]
            multi += [(f"{m}-x{WORKERS}", m, "none", WORKERS, s) for m in PARALLEL]
    skip = set(args.skip.split(",")) if args.skip else set()
    return [j for j in single if j[0] not in skip], [j for j in multi if j[0] not in skip]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--studies", type=int, default=5, help="independent studies (sampler seeds)")
    p.add_argument("--trials", type=int, default=30, help="trials per study")
    p.add_argument("--steps", type=int, default=100, help="training steps per trial")
    p.add_argument("--evals", type=int, default=5, help="evaluations per run (pruning points)")
    p.add_argument(
        "--size", choices=["tiny", "quickstart"], default="tiny", help="model and batch size"
    )
    p.add_argument("--parts", default="sampler,pruner,parallel", help="what to measure")
    p.add_argument("--jobs", type=int, default=1, help="one-worker studies run in parallel")
    p.add_argument("--skip", help="study labels not to run here, e.g. random when another call "
                   "in the same --workdir runs them")  # fmt: skip
    p.add_argument(
        "--workdir",
        help="keep the studies here (default: a temp dir); a rerun with the same "
        "settings reuses the studies it finds there (so parts can run separately)",
    )
    args = p.parse_args()
    args.parts = set(args.parts.split(","))
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="genlab-tune-bench-")
        args.workdir = tmp.name
    root = Path(args.workdir)
    (root / "site").mkdir(parents=True, exist_ok=True)
    (root / "site" / "sitecustomize.py").write_text(NO_PLOTS)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(root / "site"), *sys.path])
    _skip_run_plots()  # this process too (its sitecustomize ran before PYTHONPATH was set)
    load = [os.getloadavg()[0]]
    write_config(root, args.size)
    single, multi = _jobs(args)
    t0 = time.perf_counter()
    results: dict[tuple[str, int], dict] = {}

    def done(r: dict) -> None:
        results[r["label"], r["seed"]] = r
        load.append(os.getloadavg()[0])
        print(f"  done {r['label']} seed {r['seed']} ({r['seconds']:.0f}s)", file=sys.stderr)

    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            for f in [pool.submit(run_one, *j, args) for j in single]:
                done(f.result())
    else:
        for j in single:
            done(run_one(*j, args))
    for j in multi:
        done(run_one(*j, args))
    wall = time.perf_counter() - t0
    print_table(results, args, wall, max(load))
    if tmp is not None:
        tmp.cleanup()


def _stat(xs: list[float], fmt: str, worst=max) -> str:
    return f"{format(statistics.median(xs), fmt)} ({format(worst(xs), fmt)})"


def _need_text(needs: list[int | None], n: int) -> tuple[str, float]:
    as_num = [x if x is not None else n + 1 for x in needs]
    med, worst = statistics.median(as_num), max(as_num)
    show = lambda x: f">{n}" if x > n else f"{x:g}"  # noqa: E731
    per = ", ".join(show(x) for x in as_num)
    return f"{show(med)} ({show(worst)}) [{per}]", med


def _parallel_rows(results: dict, m: str, seeds: list[int], n: int, has) -> list[tuple]:
    """Sampler m with WORKERS workers against m with one: trials to reach its best, the
    best, duplicate points, wall time."""
    par = f"{m}-x{WORKERS}"
    if not (has(par) and has(m)):
        return []
    needs = [trials_to_reach(results[par, s]["values"], _best(results[m, s])) for s in seeds]
    text, med = _need_text(needs, n)
    head = f"{m}, {WORKERS} workers"
    bests = [_best(results[par, s]) for s in seeds]
    dups = sum(
        len(ps) - len({tuple(sorted(p.items())) for p in ps})
        for ps in (results[par, s]["params"] for s in seeds)
    )
    secs = [results[par, s]["seconds"] / results[m, s]["seconds"] for s in seeds]
    return [
        (f"{head}: trials to reach 1 worker's best", text, f"<= {n}", med <= n),
        (f"{head}: best val/loss at {n} trials", _stat(bests, ".4f"), "", ""),
        (f"{head}: duplicate points", str(dups), "0", dups == 0),
        (f"{head}: wall time vs 1 worker", _stat(secs, ".2f"), "", ""),
    ]


def print_table(results: dict, args, wall: float, peak_load: float) -> None:
    n, rows = args.trials, []
    seeds = sorted({s for _, s in results})
    has = lambda label: all((label, s) in results for s in seeds)  # noqa: E731
    targets = {s: _best(results["random", s]) for s in seeds} if has("random") else {}
    if has("random"):
        bests = [targets[s] for s in seeds]
        rows.append((f"random: best val/loss at {n} trials", _stat(bests, ".4f"), "", ""))
    for m in SAMPLERS[1:]:
        if not has(m) or not targets:
            continue
        needs = [trials_to_reach(results[m, s]["values"], targets[s]) for s in seeds]
        text, med = _need_text(needs, n)
        # A study that never reaches the target counts as n + 1 trials: not met, even when
        # n + 1 <= 12 (a short benchmark).
        met = med <= min(12, n)
        rows.append((f"{m}: trials to reach random's best of {n}", text, "<= 12", met))
        bests = [_best(results[m, s]) for s in seeds]
        rows.append((f"{m}: best val/loss at {n} trials", _stat(bests, ".4f"), "", ""))
    for pr in PRUNERS:
        label = f"random+{pr}"
        if not has(label) or not has("random"):
            continue
        steps, wall_saved, change, won, pruned = [], [], [], 0, 0
        for s in seeds:
            full, cut = results["random", s], results[label, s]
            if cut["params"] != full["params"]:
                raise SystemExit(f"{label} seed {s}: the trials drew other params than random's")
            steps.append(1 - sum(cut["steps"]) / max(1, sum(full["steps"])))
            wall_saved.append(1 - cut["seconds"] / full["seconds"])
            change.append((_best(cut) - _best(full)) / abs(_best(full)) * 100)
            twins = [v for v, ok in zip(full["values"], cut["full"]) if not ok and v is not None]
            pruned += len(twins)
            won += sum(1 for v in twins if v < _best(cut))
        sv, ch = statistics.median(steps), statistics.median(change)
        rows.append(
            (f"{label}: training steps saved", _stat(steps, ".0%", min), ">= 40%", sv >= 0.4)
        )
        rows.append((f"{label}: wall time saved", _stat(wall_saved, ".0%", min), "", ""))
        rows.append((f"{label}: final best change (+ = worse)", _stat(change, "+.2f") + " %",
                     "<= +0.5%", ch <= 0.5))  # fmt: skip
        rows.append((f"{label}: pruned trials that would have won", f"{won} of {pruned}", "", ""))
    for m in PARALLEL:
        rows += _parallel_rows(results, m, seeds, n, has)
    print(
        f"\ngenlab tune benchmark: {args.size} GPT, {args.steps} steps/trial, {args.evals} "
        f"evals/run, {n} trials/study, {len(seeds)} studies, wall {wall / 60:.1f} min, "
        f"peak load average {peak_load:.1f} on {os.cpu_count()} cores"
        f"{' (timings disturbed)' if peak_load > 2.5 else ''}\n"
        "values: median (worst) [per study]; genlab's default (tune.method auto) runs gp on "
        "this space\n"
    )
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"{'measure':<{width}}  {'value':<{vwidth}}  {'goal':<8}  met")
    for name, value, goal, met in rows:
        mark = "" if goal == "" else ("yes" if met else "no")
        print(f"{name:<{width}}  {value:<{vwidth}}  {goal:<8}  {mark}")


if __name__ == "__main__":
    main()
