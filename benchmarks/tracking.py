"""Tracking overhead: the training step with `track:` off, TensorBoard, MLflow, and both.

The quickstart model (4 layers, 4 heads, 128 wide, block 128, batch 32). Two measures:

- step ms / wall overhead: the loop's own step time (tokens per step / the throughput it
  logs), so evaluation, checkpoints and the sinks' start-up and final upload are left out.
  The settings take turns round by round so machine noise hits them alike, but on a busy
  machine this difference is noise-sized.
- CPU bound: what tracking can take from a step at most, measured rather than inferred: the
  CPU time of the tracking thread while training (`BackgroundSinks.work_cpu_s`: every record
  it converted and sent) plus the training thread's cost of handing a record over (timed
  below), per step, over the step time with tracking off. The thread runs beside the step;
  this is what it would cost if none of it overlapped.

Start-up (the tools' imports and connection, before the first step) and the wait at the end
are shown apart ("wall vs off"). Goal: <= 1% per step.

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
from genlab.track import sinks as sinks_module
from genlab.track.logs import read_jsonl
from genlab.track.sinks import BackgroundSinks, RunEnd
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


class NullSink:
    def write(self, record): ...
    def write_event(self, event): ...
    def add_samples(self, step, files): ...
    def flush(self): ...
    def close(self, end): ...


def handover_seconds(record: dict, n: int = 20_000) -> float:
    """The training thread's cost of one `write` to the tracking thread (copy + enqueue)."""
    sinks = BackgroundSinks({"null": NullSink}, print, max_queue=n + 10)
    t = time.perf_counter()
    for _ in range(n):
        sinks.write(record)
    seconds = (time.perf_counter() - t) / n
    sinks.close(RunEnd("finished"))
    return seconds


def opened_sinks() -> list:
    """Keep every SinkList the loop opens (to read its tracking thread's CPU time)."""
    opened = []
    real = sinks_module.open_sinks

    def spy(*args, **kwargs):
        opened.append(real(*args, **kwargs))
        return opened[-1]

    sinks_module.open_sinks = spy
    return opened


def tracking_cpu(sink_list) -> float:
    return sum(s.work_cpu_s for s in sink_list.sinks if isinstance(s, BackgroundSinks))


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
    cpu_per_step: dict[str, list[float]] = {name: [] for name in TRACKING}
    opened = opened_sinks()
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
                cpu_per_step[name].append(tracking_cpu(opened[-1]) / args.steps)
        record = read_jsonl(root / "off-0" / "metrics.jsonl")[-1]
    handover = handover_seconds(record)
    off = statistics.median(steps["off"])
    print(
        f"\ntracking overhead — torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.steps} steps x {args.rounds} rounds (median step, warm-up steps left out)"
    )
    print(
        f"{'track':<13}{'step ms':>9}{'wall overhead':>15}{'thread CPU ms/step':>20}"
        f"{'CPU bound':>11}{'run wall s':>12}{'wall vs off':>13}"
    )
    wall_off = statistics.median(walls["off"])
    for name in TRACKING:
        step = statistics.median(steps[name])
        wall = statistics.median(walls[name])
        cpu = statistics.median(cpu_per_step[name])
        bound = (cpu + (handover if name != "off" else 0.0)) / off
        print(
            f"{name:<13}{step * 1e3:>9.1f}{step / off - 1:>+15.2%}{cpu * 1e3:>20.3f}"
            f"{bound:>11.2%}{wall:>12.1f}{wall - wall_off:>+12.1f}s"
        )
    print(
        f"handing a record to the tracking thread: {handover * 1e6:.1f} µs. Goal: CPU bound "
        "<= 1% of a step; 'wall vs off' is start-up + the final upload, once a run"
    )


if __name__ == "__main__":
    main()
