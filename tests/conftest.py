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


_SUITE_CACHE = pytest.StashKey[str]()


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
    packages' own bytecode and compile all of torch once more).

    Prepared datasets are shared by the whole run, in one temporary folder that the run
    removes at its end: a test's `genlab` process starts in the test's own folder, whose
    ./.cache would otherwise make each of some hundred training processes prepare the same
    corpus again (~4 s each: reading, dedup with its scikit-learn and datasketch imports,
    tokenizing). The cache is keyed by the data settings and the source's content, and written
    atomically, so a process that finds it ready reads what it would have built; the tests of
    preparation itself point $GENLAB_CACHE_DIR at their own folders. Not the checkout's
    .cache: a dataset prepared by yesterday's code must not stand in for today's."""
    import os
    import sys
    import tempfile

    root = Path(__file__).resolve().parent.parent
    os.environ.setdefault("GENLAB_MACHINE_CACHE", str(root / ".cache" / "genlab" / "machine"))
    # Set by the controller before it starts the xdist workers, which inherit it.
    if "GENLAB_CACHE_DIR" not in os.environ:
        folder = tempfile.mkdtemp(prefix="genlab-suite-datasets-")
        os.environ["GENLAB_CACHE_DIR"] = folder
        config.stash[_SUITE_CACHE] = folder
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.dont_write_bytecode = False
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        os.environ["MKL_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


def pytest_unconfigure(config: pytest.Config) -> None:
    """The run's dataset cache goes with the run that made it (see pytest_configure)."""
    import shutil

    folder = config.stash.get(_SUITE_CACHE, None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
