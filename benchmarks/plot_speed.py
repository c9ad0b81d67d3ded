"""Benchmark: what the run plots (loss.png, lr.png, grad_norm.png) cost at the end of every
`genlab train` and `genlab resume`.

Each measurement is a fresh process, as a run is: the time to import genlab.track.plots
(matplotlib and its Agg canvas) and the time `plot_run` takes to draw and write the three PNGs
for a logged run of `steps` steps (train loss, lr, grad norm each step; val loss every 100;
one guard skip). Median of `--repeats` processes.

Run: .venv/bin/python benchmarks/plot_speed.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, math, sys, time
from pathlib import Path
steps, out = int(sys.argv[1]), Path(sys.argv[2])
records = [
    {"step": s, "train/loss": 4 / (1 + s / 100) + 0.05 * math.sin(s),
     "train/lr": 1e-3 * min(1, s / 50), "train/grad_norm": 1 / (1 + s / 50)}
    for s in range(1, steps + 1)
]
records += [{"step": s, "val/loss": 4 / (1 + s / 100)} for s in range(100, steps + 1, 100)]
events = [{"step": steps // 2, "kind": "loss_spike", "action": "skip"}]
start = time.perf_counter()
from genlab.track import plots
imported = time.perf_counter()
plots.plot_run(records, events, out)
print(json.dumps({"import": imported - start, "draw": time.perf_counter() - imported}))
"""


def measure(steps: int, repeats: int) -> tuple[float, float]:
    imports, draws = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, str(steps), out],
                capture_output=True,
                text=True,
                check=True,
            )
        times = json.loads(proc.stdout)
        imports.append(times["import"])
        draws.append(times["draw"])
    return statistics.median(imports), statistics.median(draws)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"run plots in a fresh process (median of {args.repeats})")
    print("| logged steps | import (s) | draw 3 PNGs (s) | total (s) |")
    print("|---:|---:|---:|---:|")
    for steps in (10, 800, 10_000):
        imported, drawn = measure(steps, args.repeats)
        print(f"| {steps:,} | {imported:.2f} | {drawn:.2f} | {imported + drawn:.2f} |")


if __name__ == "__main__":
    main()
