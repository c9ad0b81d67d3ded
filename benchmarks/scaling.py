"""Benchmark: training throughput and peak memory, 1 process vs 2 (DDP, FSDP2 and a 2-stage
pipeline through torchrun), with and without activation checkpointing and bf16 autocast; peak
memory per process of a 25M-parameter GPT under each strategy. (On a GPU: benchmarks/gpu.py,
the MFU of a ~100M-parameter GPT and the guard's overhead there.)

Each row is a real `genlab train` run of examples/lm.yaml (GPT 4×128, block 128, global batch
32) in fresh processes, one thread per process (as torchrun sets; the "2 threads" row gives one
process both cores, the fair baseline for 2 processes on a 2-core machine):
tokens/s is the median over steps after the first few (global tokens per step / step time;
evaluation steps excluded), peak MB is rank 0's max RSS (CPU) or max allocated (CUDA), state
MB is rank 0's exact parameters + gradients + optimizer state (its shards under FSDP, its
stage under the pipeline). On CPU the RSS includes ~450 MB of interpreter and libraries and
the allocator's slack from FSDP's per-block all-gathers, so the state column is where sharding
shows.

Run: .venv/bin/python benchmarks/scaling.py [--steps 40] [--memory-steps 8]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
BASE = [
    "train.progress=false",
    "train.eval_every=1000",
    "train.checkpoint_every=1000",
    "train.sample_every=1000",
    "train.eval_batches=1",
    "schedule.warmup_steps=5",
    "train.precision=fp32",  # rows name their precision (the default auto may pick bf16)
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(nproc: int, overrides: list[str], steps: int, config: str = "examples/lm.yaml") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        args = ["train", config, *BASE, f"train.max_steps={steps}", *overrides]
        args += ["--run-dir", str(Path(tmp) / "run")]
        if nproc == 1:
            cmd = [sys.executable, "-m", "genlab.cli", *args]
        else:
            torchrun = str(Path(sys.executable).with_name("torchrun"))
            cmd = [torchrun, f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1"]
            cmd += [f"--master-port={_free_port()}", "-m", "genlab.cli", *args]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
        lines = (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    skip = min(5, len(records) // 4)  # warm-up steps (allocation, first-call overheads)
    rates = [r["throughput/tokens_per_s"] for r in records[skip:-1]]
    return {
        "tokens_per_s": statistics.median(rates),
        "peak_mb": max(r["memory/peak_mb"] for r in records),
        "state_mb": max(r["memory/state_mb"] for r in records),
    }


DDP = ["train.strategy=ddp"]
FSDP = ["train.strategy=fsdp"]
PIPE = ["train.strategy=pipeline", "train.pipeline_schedule=1f1b"]
SPEED_ROWS = [
    ("1 process", 1, []),
    ("1 process, 2 threads", 1, ["train.threads=2"]),
    ("1 process, activation ckpt", 1, ["train.activation_checkpointing=true"]),
    ("1 process, bf16", 1, ["train.precision=bf16"]),
    ("2 processes DDP", 2, DDP),
    ("2 processes DDP, activation ckpt", 2, [*DDP, "train.activation_checkpointing=true"]),
    ("2 processes DDP, bf16", 2, [*DDP, "train.precision=bf16"]),
    ("2 processes FSDP", 2, FSDP),
    ("2 processes FSDP, activation ckpt", 2, [*FSDP, "train.activation_checkpointing=true"]),
    ("2 stages pipeline 1F1B, 4 micro", 2, PIPE),
]
# Memory: a GPT big enough (8 × 512, 25M parameters: ~400 MB of weights, gradients and Adam
# state) that sharding shows in the peak RSS of a process.
BIG = ["model.n_layer=8", "model.n_head=8", "model.n_embd=512", "train.batch_size=8"]
MEMORY_ROWS = [
    ("1 process", 1, []),
    ("1 process, activation ckpt", 1, ["train.activation_checkpointing=true"]),
    ("2 processes DDP", 2, DDP),
    ("2 processes FSDP, sharded ckpt", 2, [*FSDP, "train.checkpoint_format=sharded"]),
    ("2 stages pipeline 1F1B, 4 micro", 2, PIPE),
]


def table(title: str, rows: list, base: list[str], steps: int) -> None:
    print(f"\n{title}")
    print(f"| {'setup':<34} | {'tokens/s':>9} | {'peak MB / process':>17} | {'state MB':>8} |")
    print(f"|{'-' * 36}|{'-' * 11}|{'-' * 19}|{'-' * 10}|")
    for label, nproc, overrides in rows:
        r = run(nproc, ["train.device=cpu", *base, *overrides], steps)
        cells = f"{r['tokens_per_s']:>9,.0f} | {r['peak_mb']:>17,.0f} | {r['state_mb']:>8,.0f}"
        print(f"| {label:<34} | {cells} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--memory-steps", type=int, default=8)
    args = p.parse_args()
    print(f"device: cpu ({os.cpu_count()} cores), torch {torch.__version__}")
    table(f"speed: examples/lm.yaml (GPT 4×128), {args.steps} steps", SPEED_ROWS, [], args.steps)
    title = f"memory: GPT 8×512 (25M parameters), batch 8, {args.memory_steps} steps"
    table(title, MEMORY_ROWS, BIG, args.memory_steps)


if __name__ == "__main__":
    main()
