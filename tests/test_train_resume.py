"""Exact resume: a run killed at any moment continues as if never interrupted."""

import os
import signal
import subprocess
import sys
import time

import pytest

from genlab.training import checkpoint as ckpt
from genlab.training.loop import resume, train
from testkit import TINY, loss_keys, read_metrics, run_cli, tiny_config


def test_kill_9_then_resume_matches_uninterrupted_run(tmp_path):
    # All three runs are separate processes so they share torch's thread settings (the
    # float reduction order, hence the exact numbers, depends on the thread count).
    steps = "train.max_steps=150"
    cli = [sys.executable, "-m", "genlab.cli"]
    train_cmd = [*cli, "train", "examples/lm.yaml", *TINY, steps, "--run-dir"]
    subprocess.run([*train_cmd, str(tmp_path / "ref")], check=True, capture_output=True)
    ref = loss_keys(read_metrics(tmp_path / "ref"))

    run_dir = tmp_path / "killed"
    proc = subprocess.Popen([*train_cmd, str(run_dir)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not ckpt.list_checkpoints(run_dir / "checkpoints") and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = len(read_metrics(run_dir))
    assert killed_at < 150, "the run finished before it could be killed"

    subprocess.run([*cli, "resume", str(run_dir)], check=True, capture_output=True)
    got = loss_keys(read_metrics(run_dir))
    assert [r[0] for r in got] == list(range(1, 151))
    assert got == ref


def test_resume_with_more_steps_continues_from_last_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "run"
    train(tiny_config("train.max_steps=20", "schedule.decay=constant"), run_dir)
    assert run_cli("resume", run_dir) == 2  # already finished: a clean error
    assert "train.max_steps=40" in capsys.readouterr().err
    assert run_cli("resume", run_dir, "train.max_steps=30") == 0
    records = read_metrics(run_dir)
    assert [r["step"] for r in records] == list(range(1, 31))
    # Constant lr after warmup: the extended run equals a 30-step run from the start.
    ref = train(tiny_config("train.max_steps=30", "schedule.decay=constant"), tmp_path / "ref")
    assert loss_keys(records) == loss_keys(read_metrics(ref.run_dir))


def test_crash_during_checkpoint_save_leaves_previous_usable(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    train(tiny_config("train.max_steps=20"), run_dir)
    before = ckpt.latest(run_dir / "checkpoints")
    assert before is not None and before.step == 20

    # The next save dies after writing the weights, before the manifest.
    real_save = ckpt.torch.save

    def dying_save(*args, **kwargs):
        real_save(*args, **kwargs)
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt.torch, "save", dying_save)
    with pytest.raises(OSError, match="simulated"):
        resume(run_dir, ["train.max_steps=40"])
    monkeypatch.undo()

    after = ckpt.latest(run_dir / "checkpoints")
    assert after.path == before.path  # the previous checkpoint is still the one used
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))
    resume(run_dir, ["train.max_steps=40"])
    assert read_metrics(run_dir)[-1]["step"] == 40


def test_half_written_or_corrupt_checkpoint_is_never_used(tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_config("train.max_steps=20"), run_dir)
    root = run_dir / "checkpoints"
    # kill -9 mid-save leaves a temp dir; a torn copy without manifest is ignored too.
    (root / ".tmp-step-30-1-1").mkdir()
    (root / "step-30").mkdir()
    (root / "step-30" / "model.safetensors").write_bytes(b"partial")
    assert ckpt.latest(root).step == 20
    # A checkpoint whose weights no longer match its manifest hash is skipped.
    weights = root / "step-20" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"garbage!")
    assert ckpt.latest(root).step == 10


def test_checkpoint_weights_load_with_safetensors(tmp_path):
    from safetensors.torch import load_file

    run_dir = tmp_path / "run"
    train(tiny_config("train.max_steps=10"), run_dir)
    tensors = load_file(str(run_dir / "checkpoints" / "step-10" / "model.safetensors"))
    assert any(k.endswith("qkv.weight") for k in tensors)


def test_a_multi_process_run_resumes_in_one_process_with_a_note(tmp_path):
    """`genlab resume RUN` as documented, on a run whose config asks for FSDP: one process
    resumes it without a strategy, says so, and keeps the run's own setting for later."""
    run = tmp_path / "run"
    train(tiny_config("train.max_steps=10"), run)
    config_file = run / "config.yaml"
    config_file.write_text(config_file.read_text().replace("strategy: none", "strategy: fsdp"))
    done = subprocess.run(
        [sys.executable, "-m", "genlab.cli", "resume", str(run), "train.max_steps=14"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming a train.strategy=fsdp run in one process" in done.stderr
    assert f"genlab resume {run} --nproc-per-node N" in done.stderr
    assert read_metrics(run)[-1]["step"] == 14
    assert "strategy: fsdp" in config_file.read_text()
