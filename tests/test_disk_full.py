"""A disk that fills up during a checkpoint save: exit 2 with one line naming the place, the
size and the checkpoint kept; nothing half-written; `genlab resume` works once there is space.

The failure is a real one from the OS: the resumed run is started with a file-size limit
(RLIMIT_FSIZE) that its 70 KB weights and 55 KB plots fit under but its 170 KB training
state does not, so writing state.pt fails with EFBIG (Python ignores SIGXFSZ), as a full
disk fails with ENOSPC. The write layer is also checked with ENOSPC itself, in process."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from genlab.training import checkpoint as ckpt
from genlab.training.loop import resume, train
from testkit import TINY, loss_keys, read_metrics, tiny_config

GENLAB = str(Path(sys.executable).with_name("genlab"))
LIMIT = 100 * 1024  # bytes per file


def _genlab(*args: object, limit: int | None = None) -> subprocess.CompletedProcess:
    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [GENLAB, *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limited if limit else None,
    )


def _checkpoints(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def test_a_full_disk_during_a_save_is_exit_2_and_resume_works_after(tmp_path):
    cfg = ["train", "examples/lm.yaml", *TINY, "schedule.decay=constant"]
    run = tmp_path / "run"
    first = _genlab(*cfg, "train.max_steps=10", "--run-dir", run)  # prepares the data too
    assert first.returncode == 0, first.stderr[-2000:]
    state_size = (run / "checkpoints/step-10/state.pt").stat().st_size
    assert (run / "checkpoints/step-10/model.safetensors").stat().st_size < LIMIT < state_size

    full = _genlab("resume", run, "train.max_steps=30", limit=LIMIT)
    lines = [ln for ln in full.stderr.splitlines() if ln.startswith("genlab: error")]
    assert full.returncode == 2, full.stderr[-2000:]
    assert "Traceback" not in full.stderr and len(lines) == 1 and len(lines[0]) <= 300
    assert "disk full at '" in lines[0] and "/checkpoints' (File too large)" in lines[0]
    assert "checkpoint step-20 needs about 0.2 MB" in lines[0]
    assert "the last good checkpoint step-10 is kept" in lines[0]
    assert _checkpoints(run) == ["step-10"]  # no temporary directory, no partial step-20
    assert ckpt.verify_checkpoint(run / "checkpoints/step-10").step == 10

    again = _genlab("resume", run, "train.max_steps=30")  # space again
    assert again.returncode == 0, again.stderr[-2000:]
    reference = tmp_path / "reference"
    assert _genlab(*cfg, "train.max_steps=30", "--run-dir", reference).returncode == 0
    assert loss_keys(read_metrics(run)) == loss_keys(read_metrics(reference))


@pytest.mark.parametrize("background", [True, False], ids=["async", "sync"])
def test_enospc_from_the_write_layer_is_a_disk_full_error(tmp_path, monkeypatch, background):
    from genlab.errors import DiskFullError

    run = tmp_path / "run"
    train(tiny_config("train.max_steps=10"), run)
    real = ckpt.write_durable

    def full_disk(path: Path, data: bytes) -> None:
        if path.name == "state.pt":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data)

    monkeypatch.setattr(ckpt, "write_durable", full_disk)
    flag = f"train.async_checkpoint={str(background).lower()}"
    with pytest.raises(DiskFullError, match="No space left on device") as caught:
        resume(run, ["train.max_steps=20", flag])
    assert "checkpoint step-20 needs about" in str(caught.value)
    assert "the last good checkpoint step-10 is kept" in str(caught.value)
    assert _checkpoints(run) == ["step-10"]
