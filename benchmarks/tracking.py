"""Tracking overhead: the training step with `track:` off, TensorBoard, MLflow, and both.

The quickstart model (4 layers, 4 heads, 128 wide, block 128, batch 32). A step's time is the
loop's own measurement (the throughput it logs: tokens per step / tokens per second), so
evaluation, checkpoints and the sinks' start-up and final flush are left out: what is measured
is what tracking costs each step while it runs on its background thread. The settings take
turns round by round so machine noise hits them alike. Start-up (the tools' imports and
connection, before the first step) and the wait at the end are shown apart. Goal: <= 1%.

    .venv/bin/python benchmarks/tracking.py [--steps 120] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from genlab import config
from genlab.track.logs import read_jsonl
from genlab.training.loop import train

SETTINGS = [
    "data.tokenizer=char",
    "data.block_size=128",
    "model.n_layer=4",
    "model.n_head=4",
    "model.n_embd=128",
    "train.batch_size=32",
    "train.progress=false",
    "schedule.warmup_steps=10",
    "track.report=false",
]
TRACKING = {
    "off": [],
    "tensorboard": ["track.tensorboard=true"],
    "mlflow": ["track.mlflow=true"],
    "both": ["track.tensorboard=true", "track.mlflow=true"],
}
WARMUP_STEPS = 5  # left out of every measurement (allocator warm-up)


def step_seconds(run_dir: Path, tokens_per_step: int) -> list[float]:
    records = read_jsonl(run_dir / "metrics.jsonl")[WARMUP_STEPS:]
    return [tokens_per_step / r["throughput/tokens_per_s"] for r in records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    every = args.steps // 4  # evaluations, samples and checkpoints as a real run has them
    base = [
        *SETTINGS,
        f"train.max_steps={args.steps}",
        f"train.eval_every={every}",
        f"train.sample_every={every}",
        f"train.checkpoint_every={args.steps}",
    ]
    steps: dict[str, list[float]] = {name: [] for name in TRACKING}
    walls: dict[str, list[float]] = {name: [] for name in TRACKING}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # The MLflow store is created once (a new SQLite store migrates its schema, ~10 s).
        train(config.load(None, [*base, "train.max_steps=2", *TRACKING["mlflow"]]), root / "w")
        for r in range(args.rounds):
            for name, extra in TRACKING.items():
                cfg = config.load(None, [*base, *extra])
                run_dir = root / f"{name}-{r}"
                t = time.perf_counter()
                train(cfg, run_dir)
                walls[name].append(time.perf_counter() - t)
                steps[name] += step_seconds(run_dir, cfg.train.batch_size * cfg.data.block_size)
    off = statistics.median(steps["off"])
    print(
        f"\ntracking overhead — torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.steps} steps x {args.rounds} rounds (median step, warm-up steps left out)"
    )
    print(f"{'track':<13}{'step ms':>9}{'overhead':>10}{'run wall s':>12}{'wall vs off':>13}")
    wall_off = statistics.median(walls["off"])
    for name in TRACKING:
        step = statistics.median(steps[name])
        wall = statistics.median(walls[name])
        print(
            f"{name:<13}{step * 1e3:>9.1f}{step / off - 1:>+10.2%}{wall:>12.1f}"
            f"{wall - wall_off:>+12.1f}s"
        )
    print("goal: step overhead <= 1%; 'wall vs off' is start-up + the final flush, once a run")


if __name__ == "__main__":
    main()
