"""Stopping a run from outside, through the real command: Ctrl-C (SIGINT) and SIGTERM save a
checkpoint at the step they arrive and print the exact command that continues the run, which
then continues exactly; a console nobody reads any more (`genlab train ... | head -3`) never
stops a run."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testkit import loss_keys, read_metrics

GENLAB = str(Path(sys.executable).with_name("genlab"))
# Tiny and quick; a constant lr after warmup, so a run's lr does not depend on max_steps and
# a run resumed to step N matches one trained to N directly.
TINY = [
    "data.source=corpus.txt", "data.block_size=32", "data.dedup.near=false",
    "model.n_layer=1", "model.n_head=2", "model.n_embd=32", "train.batch_size=8",
    "train.eval_batches=2", "train.eval_every=5", "train.checkpoint_every=1000",
    "train.sample_every=1000", "train.sample_tokens=8", "train.progress=false",
    "schedule.warmup_steps=2", "schedule.decay=constant", "guard.healthy_after=2",
]  # fmt: skip


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    from pydoc_data.topics import topics

    docs = [topics[k].strip() for k in sorted(topics)[:40]]
    (tmp_path / "corpus.txt").write_text("\n\n\n".join(docs) + "\n")
    (tmp_path / "tiny.yaml").write_text("name: tiny\n")
    return tmp_path


def _env(cwd: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "GENLAB_CACHE_DIR": str(cwd / "cache")}


def _genlab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [GENLAB, *args], cwd=cwd, env=_env(cwd), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _wait_for_step(run: Path, proc: subprocess.Popen, step: int) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        log = run / "metrics.jsonl"
        lines = log.read_text().splitlines() if log.is_file() else []
        if lines and lines[-1].endswith("}") and json.loads(lines[-1])["step"] >= step:
            return
        time.sleep(0.05)
    raise AssertionError("the run never reached the step")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_saves_a_checkpoint_and_prints_the_command_that_continues_exactly(workdir, sig):
    run = workdir / "runs" / "stopped"
    cmd = [GENLAB, "train", "tiny.yaml", *TINY, "train.max_steps=5000", "--run-dir", str(run)]
    proc = subprocess.Popen(
        cmd, cwd=workdir, env=_env(workdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    _wait_for_step(run, proc, 7)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    # No checkpoint was due (checkpoint_every=1000): the one there is the interrupt's.
    (checkpoint,) = (run / "checkpoints").glob("step-*")
    stopped_at = int(checkpoint.name.removeprefix("step-"))
    assert stopped_at >= 7 and (checkpoint / "manifest.json").is_file()
    assert json.loads((checkpoint / "manifest.json").read_text())["healthy"] is True
    assert last == (
        f"genlab: interrupted by {sig.name} at step {stopped_at}; checkpoint saved: "
        f"{checkpoint}; continue with: genlab resume {shlex.quote(str(run))}"
    )
    assert read_metrics(run)[-1]["step"] == stopped_at  # nothing logged past the checkpoint

    # The printed command, as printed (a few steps more), continues exactly: the same logs
    # as a run trained straight to that step.
    target = f"train.max_steps={stopped_at + 4}"
    resume = shlex.split(last.split("continue with: ", 1)[1])
    _genlab(*resume[1:], target, cwd=workdir)
    if sig == signal.SIGINT:  # once is enough for the comparison
        straight = workdir / "runs" / "straight"
        _genlab("train", "tiny.yaml", *TINY, target, "--run-dir", str(straight), cwd=workdir)
        assert loss_keys(read_metrics(run)) == loss_keys(read_metrics(straight))
    else:
        assert read_metrics(run)[-1]["step"] == stopped_at + 4


def test_a_closed_pipe_never_stops_a_run(workdir):
    """`genlab train ... 2>&1 | head -3`: the reader leaves after three lines; the run keeps
    going, finishes, checkpoints and exits 0."""
    run = workdir / "runs" / "piped"
    cmd = [GENLAB, "train", "tiny.yaml", *TINY, "train.max_steps=40", "--run-dir", str(run)]
    proc = subprocess.Popen(
        cmd, cwd=workdir, env=_env(workdir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    head = [proc.stdout.readline() for _ in range(3)]
    proc.stdout.close()  # what `head -3` does after its third line
    assert proc.wait(timeout=240) == 0
    assert any(b"genlab" in line for line in head)
    assert (run / "checkpoints" / "step-40" / "manifest.json").is_file()
    assert read_metrics(run)[-1]["step"] == 40
    assert json.loads((run / "metrics.json").read_text())["step"] == 40
