"""Test helpers: a tiny, fast config and an in-process CLI runner."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from genlab import config
from genlab.cli import main

# A model and data small enough that 60 steps take a couple of seconds on 2 cores.
TINY = [
    "data.block_size=32",
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "train.batch_size=8",
    "train.eval_batches=2",
    "train.eval_every=10",
    "train.checkpoint_every=10",
    "train.sample_every=20",
    "train.sample_tokens=20",
    "train.progress=false",
    "schedule.warmup_steps=5",
    "guard.healthy_after=3",
    "optim.lr=3e-3",
    # Not `auto`: its choice depends on a timing, and tests compare numbers across runs
    # (tests/test_precision.py covers auto).
    "train.precision=fp32",
]


def tiny_config(*overrides: str) -> config.ExperimentConfig:
    return config.load(None, [*TINY, *overrides])


def run_cli(*argv: str) -> int:
    return main([str(a) for a in argv])


def read_metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def loss_keys(records: list[dict]) -> list[tuple]:
    """Everything in the metrics that must be reproducible (not wall time or throughput)."""
    keep = ("train/loss", "train/grad_norm", "train/lr", "val/loss")
    return [(r["step"], *(r.get(k) for k in keep)) for r in records]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def genlab_process(
    *args: str, nproc: int = 1, launcher: str = "torchrun"
) -> subprocess.CompletedProcess:
    """`genlab ARGS` in a subprocess (with `nproc` > 1: under torchrun, or with launcher
    "genlab" through `genlab ... --nproc-per-node`), one thread per process (as torchrun sets),
    so the reference and the ranks reduce floats in comparable orders."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "genlab.cli", *args]
    if nproc > 1 and launcher == "genlab":
        cmd = [str(Path(sys.executable).with_name("genlab")), *args, f"--nproc-per-node={nproc}"]
    elif nproc > 1:
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        cmd = [torchrun, f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1"]
        cmd += [f"--master-port={free_port()}", "-m", "genlab.cli", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


@contextlib.contextmanager
def linear_output_dtypes() -> Iterator[set]:
    """The dtypes every nn.Linear in training mode produced while the block ran (the precision
    a training loop really computed in), collected by a global forward hook."""
    import torch

    seen: set = set()

    def hook(module, args, output):
        if isinstance(module, torch.nn.Linear) and module.training:
            seen.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


# Linux's /sys takes no new entries, not even root's (whose permission bits allow them): a
# path under it is one where nothing can be written, on Linux only.
SYS_TAKES_NO_WRITES = Path("/sys/kernel").is_dir()
needs_sys = pytest.mark.skipif(not SYS_TAKES_NO_WRITES, reason="needs Linux's /sys")


@contextlib.contextmanager
def immutable(folder: Path) -> Iterator[Path]:
    """`folder` takes no new entries, not even from root (chattr +i: ext4 and most local
    filesystems); skips the test where the flag cannot be set."""
    if shutil.which("chattr") is None:
        pytest.skip("needs chattr")
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem or user cannot set the immutable flag")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
