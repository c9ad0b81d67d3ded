"""Fixtures shared by the whole suite (helpers live in testkit.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from testkit import TINY


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture
def write_config(tmp_path: Path):
    def _write(text: str, name: str = "cfg.yaml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p

    return _write


@pytest.fixture
def one_torch_thread():
    """Tiny models run faster on one intra-op thread (and stay immune to oversubscription
    on a shared machine); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker gets one core's worth of threads (and so do the `genlab`
    subprocesses it starts, through the environment): two workers with two threads each would
    oversubscribe a 2-core machine and run slower than one. Per-machine measurements (the
    matmul peak behind throughput/mfu, precision calibrations) go to the checkout's ignored
    .cache, not the user's home: measured once per checkout, shared by the workers.

    The suite starts some hundreds of `genlab` processes. Where the environment forbids
    bytecode files (PYTHONDONTWRITEBYTECODE, as on this project's machines) each of them would
    compile genlab's modules again (~0.6 s a process): the suite lets Python write them (into
    the ignored __pycache__ folders; a PYTHONPYCACHEPREFIX would also hide the installed
    packages' own bytecode and compile all of torch once more)."""
    import os
    import sys

    root = Path(__file__).resolve().parent.parent
    os.environ.setdefault("GENLAB_MACHINE_CACHE", str(root / ".cache" / "genlab" / "machine"))
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.dont_write_bytecode = False
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        os.environ["MKL_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)
