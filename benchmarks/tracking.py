"""Tracking overhead: the training step with `track:` off, TensorBoard, MLflow, and both.

The quickstart model (4 layers, 4 heads, 128 wide, block 128, batch 32). Every step's wall
time and the process's CPU time are read at each metrics record (a spy on `SinkList.write`:
one call per step), so steps followed or preceded by an evaluation, samples or a checkpoint
are left out, as are the warm-up steps: what is measured is the cost of tracking per step,
the tools working on their background threads (TensorBoard's event writer, MLflow's batches).
CPU time counts every thread of the process and does not grow when the machine is busy,
so "CPU overhead" holds on a shared machine where the wall-time difference is noise-sized.
The settings take turns round by round. Start-up (the tools' imports and connection, before
the first step) and the final upload are shown apart ("wall vs off", once a run).

On 2 busy cores those differences carry several percent of noise, so the cost is also
measured directly: the loop's own time in `SinkList.write` (putting the record on the
tracking queue) and the CPU time the tracking thread spends in the tools' write, event,
samples and flush calls (`time.thread_time` on that thread; opening and closing the tools
excluded), per training step. Their sum over the step time is the most tracking can take
from training even when it competes for the cores ("direct cost").
Goal: <= 1% per step.

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
from genlab.track.sinks import BackgroundSinks, SinkList
from genlab.training.loop import train

# The quickstart model (examples/lm.yaml: GPT 4 x 128, block 128, batch 32, char tokens)
# with these settings on top.
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lm.yaml"
SETTINGS = [
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


class TimedSink:
    """A tool's sink whose per-record calls add their thread CPU time to `spent`."""

    PER_RECORD = ("write", "write_event", "add_samples", "flush")

    def __init__(self, sink, spent: list[float]) -> None:
        self._sink, self._spent = sink, spent

    def __getattr__(self, name: str):
        attr = getattr(self._sink, name)
        if name not in self.PER_RECORD:
            return attr

        def timed(*args, **kwargs):
            t = time.thread_time()
            try:
                return attr(*args, **kwargs)
            finally:
                self._spent[0] += time.thread_time() - t

        return timed


class StepClock:
    """(step, wall, process CPU) at every metrics record the loop writes; the loop's time in
    SinkList.write and the tracking thread's CPU time in the tools' calls."""

    def __init__(self) -> None:
        self.marks: list[tuple[int, float, float]] = []
        self.in_loop = [0.0]  # seconds the training thread spent in SinkList.write
        self.on_thread = [0.0]  # CPU seconds of the tools' per-record calls
        self.records = 0
        write = SinkList.write

        def spy(sinks, record):
            self.marks.append((int(record["step"]), time.perf_counter(), time.process_time()))
            t = time.perf_counter()
            write(sinks, record)
            self.in_loop[0] += time.perf_counter() - t
            self.records += 1

        SinkList.write = spy  # type: ignore[method-assign]
        init = BackgroundSinks.__init__
        spent = self.on_thread

        def timed_init(sinks, openers, *args, **kwargs):
            wrapped = {
                name: (lambda opener=opener: TimedSink(opener(), spent))
                for name, opener in openers.items()
            }
            init(sinks, wrapped, *args, **kwargs)

        BackgroundSinks.__init__ = timed_init  # type: ignore[method-assign]

    def direct(self) -> float:
        """Seconds per record in the loop's write plus on the tracking thread; resets."""
        per = (self.in_loop[0] + self.on_thread[0]) / max(self.records, 1)
        self.in_loop[0] = self.on_thread[0] = 0.0
        self.records = 0
        return per

    def steps(self, every: int) -> tuple[list[float], list[float]]:
        """Wall and CPU seconds of the plain steps since the last reset."""
        walls, cpus = [], []
        for (_, w0, c0), (step, w1, c1) in zip(self.marks, self.marks[1:]):
            if step > WARMUP_STEPS and (step - 1) % every and step % every:
                walls.append(w1 - w0)
                cpus.append(c1 - c0)
        self.marks.clear()
        return walls, cpus


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
        f"train.checkpoint_every={every}",
    ]
    walls: dict[str, list[float]] = {name: [] for name in TRACKING}
    cpus: dict[str, list[float]] = {name: [] for name in TRACKING}
    runs: dict[str, list[float]] = {name: [] for name in TRACKING}
    direct: dict[str, list[float]] = {name: [] for name in TRACKING}
    clock = StepClock()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # The MLflow store is created once (a new SQLite store migrates its schema, ~10 s).
        train(config.load(EXAMPLE, [*base, "train.max_steps=2", *TRACKING["mlflow"]]), root / "w")
        clock.marks.clear()
        clock.direct()
        for r in range(args.rounds):
            for name, extra in TRACKING.items():
                t = time.perf_counter()
                train(config.load(EXAMPLE, [*base, *extra]), root / f"{name}-{r}")
                runs[name].append(time.perf_counter() - t)
                wall, cpu = clock.steps(every)
                direct[name].append(clock.direct())
                walls[name] += wall
                cpus[name] += cpu
    wall_off, cpu_off = statistics.median(walls["off"]), statistics.median(cpus["off"])
    run_off = statistics.median(runs["off"])
    print(
        f"\ntracking overhead — torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.steps} steps x {args.rounds} rounds, medians of plain steps"
    )
    print(
        f"{'track':<13}{'step ms':>9}{'wall overhead':>15}{'CPU ms/step':>13}"
        f"{'CPU overhead':>14}{'direct ms':>11}{'direct cost':>13}{'run wall s':>12}"
        f"{'wall vs off':>13}"
    )
    for name in TRACKING:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        run = statistics.median(runs[name])
        cost = statistics.median(direct[name])
        print(
            f"{name:<13}{wall * 1e3:>9.1f}{wall / wall_off - 1:>+15.2%}{cpu * 1e3:>13.1f}"
            f"{cpu / cpu_off - 1:>+14.2%}{cost * 1e3:>11.3f}{cost / wall_off:>13.3%}"
            f"{run:>12.1f}{run - run_off:>+12.1f}s"
        )
    print("goal: <= 1% per step; 'wall vs off': start-up and final upload, once a run")


if __name__ == "__main__":
    main()
