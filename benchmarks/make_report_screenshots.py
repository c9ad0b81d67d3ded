"""Screenshots of the three report pages for the README: a run, a study, a comparison.

1. A shortened quickstart run (examples/lm.yaml, 300 steps) with two faults injected so the
   stability guard acts (a loss spike at step 150: skipped; NaN losses at 200-202: skip, lr
   cooldown, rollback), then `genlab eval` on it: runs/report-demo/report.html.
2. The same run with half the learning rate: `genlab compare` of the two: compare.html.
3. A small search (examples/tune-lm.yaml, 6 trials of 60 steps, the top 2 re-run on 2 fresh
   seeds): studies/report-demo/report.html.

Each page is opened in headless Chromium (`chromium --headless --screenshot`, from a file://
URL: the pages are self-contained) and saved under docs/images/. Prints one table: what was
made, its size, and how long it took.

    .venv/bin/python benchmarks/make_report_screenshots.py [--out docs/images] [--runs runs]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import genlab

ROOT = Path(__file__).resolve().parent.parent
FAULTS = [
    "guard.inject=[{step: 150, kind: loss_spike, scale: 50}, {step: 200, kind: nan_loss}, "
    "{step: 201, kind: nan_loss}, {step: 202, kind: nan_loss}]"
]
RUN = [
    "train.max_steps=300",
    "train.eval_every=50",
    "train.sample_every=100",
    "train.checkpoint_every=50",
    "train.progress=false",
]
STUDY = [
    "tune.n_trials=6",
    "tune.seeds=1",
    "tune.final.top_k=2",
    "tune.final.seeds=2",
    "train.max_steps=60",
    "train.eval_every=30",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("needs headless Chromium on PATH (e.g. apt-get install chromium)")


def screenshot(page: Path, png: Path, height: int) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size=1400,{height}",
                "--virtual-time-budget=10000",  # let plotly.js finish drawing
                f"--screenshot={png}",
                page.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    parser.add_argument("--studies", type=Path, default=ROOT / "studies")
    args = parser.parse_args()
    args.out = args.out.resolve()  # the table prints paths relative to the repository
    args.out.mkdir(parents=True, exist_ok=True)
    made = []

    t = time.perf_counter()
    run = args.runs / "report-demo"
    genlab.train(ROOT / "examples" / "lm.yaml", run, [*RUN, *FAULTS], overwrite=True)
    genlab.evaluate(run, metrics="perplexity,bits_per_byte,robustness", num_samples=40)
    made.append(("run report", run / "report.html", time.perf_counter() - t))

    t = time.perf_counter()
    slower = args.runs / "report-demo-lr1e-3"
    genlab.train(ROOT / "examples" / "lm.yaml", slower, [*RUN, "optim.lr=1e-3"], overwrite=True)
    compare = genlab.compare([run, slower], args.runs / "compare.html")
    made.append(("comparison", compare, time.perf_counter() - t))

    t = time.perf_counter()
    study_dir = args.studies / "report-demo"
    shutil.rmtree(study_dir, ignore_errors=True)
    genlab.tune(ROOT / "examples" / "tune-lm.yaml", STUDY, study_dir)
    made.append(("study report", study_dir / "report.html", time.perf_counter() - t))

    shots = {"run report": 1900, "comparison": 1700, "study report": 1500}
    names = {
        "run report": "report-run",
        "comparison": "report-compare",
        "study report": "report-study",
    }
    print(f"\n{'page':<14}{'file':<52}{'MB':>6}{'made in':>10}  screenshot")
    for what, page, seconds in made:
        png = args.out / f"{names[what]}.png"
        screenshot(page, png, shots[what])
        size = page.stat().st_size / 2**20
        print(f"{what:<14}{page!s:<52}{size:>6.1f}{seconds:>9.0f}s  {png.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
