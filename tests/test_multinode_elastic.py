"""Several machines and elastic recovery through genlab's launcher (2 gloo ranks on this
machine, `OMP_NUM_THREADS=1`).

- Two nodes: the README's multi-machine command, run twice here as node 0 and node 1 (one
  process each, c10d rendezvous on 127.0.0.1), follows one process with the same global batch
  step for step, under DDP and FSDP.
- A killed worker: `guard.inject` kind crash kills rank 1 abruptly; with `--max-restarts 1`
  the group comes back, resumes from the last healthy checkpoint by itself and logs what an
  uninterrupted run logs; the restart is an event, the crash does not fire twice, and the
  goodput account counts the restart. One process restarted the same way logs exactly what
  an uninterrupted run logs.
- A user error is not retried: the restarted workers repeat its exit code at once."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from genlab.cli import main
from genlab.training import elastic
from testkit import TINY, free_port, loss_keys, read_metrics

ROOT = Path(__file__).resolve().parents[1]
GENLAB = str(Path(sys.executable).with_name("genlab"))
CFG = [
    *TINY,
    "model.n_layer=2",  # two FSDP units
    "schedule.decay=constant",
    "train.max_steps=12",
    "train.checkpoint_every=4",
    "train.eval_every=4",
    "train.sample_every=100",
]
REL = 1e-4  # as in test_sharded_strategies.py: reduction order differs across world sizes


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _genlab(*args: object, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [GENLAB, *map(str, args)]
    return subprocess.run(
        cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _losses(run_dir: Path) -> list[float]:
    return [r["train/loss"] for r in read_metrics(run_dir)]


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ref") / "run"
    done = _genlab("train", "examples/lm.yaml", *CFG, "--run-dir", run)
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def readme_multi_machine_commands() -> list[list[str]]:
    """The README's two-machine commands (node 0 and node 1), as argument lists."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    joined = text.replace("\\\n", " ")
    lines = [ln.strip() for ln in joined.splitlines() if "--nnodes 2" in ln]
    commands = [shlex.split(re.sub(r"\s+#.*$", "", ln)) for ln in lines if ln.startswith("genlab")]
    assert len(commands) == 2, lines
    return commands


def _as_test(command: list[str], port: int, run: Path, strategy: str) -> list[str]:
    """The README's command on this machine: node 0 at 127.0.0.1, a free port, a tiny model."""
    out, skip = [], False
    for arg in command[1:]:  # without "genlab"
        if skip:
            skip = False
        elif arg in ("--master-addr", "--master-port", "--run-dir"):
            skip = True  # and its value
        else:
            out.append(f"train.strategy={strategy}" if arg.startswith("train.strategy=") else arg)
    return [
        *out,
        *CFG,
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port),
        "--run-dir",
        str(run),
    ]


@pytest.mark.multiproc
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_nodes_follow_one_process(tmp_path, reference, strategy):
    run = tmp_path / "two-nodes"
    port = free_port()
    nodes = []
    for command in readme_multi_machine_commands():
        args = _as_test(command, port, run, strategy)
        nodes.append(
            subprocess.Popen(
                [GENLAB, *args],
                cwd=ROOT,
                env=_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-3000:]
    assert _losses(run) == pytest.approx(_losses(reference), rel=REL)
    assert [r["step"] for r in read_metrics(run)] == list(range(1, 13))  # rank 0 alone wrote
    if strategy == "fsdp":  # each node held half of the model
        ratio = (
            read_metrics(run)[-1]["memory/state_mb"]
            / read_metrics(reference)[-1]["memory/state_mb"]
        )
        assert 0.45 < ratio < 0.6


@pytest.mark.multiproc
def test_a_killed_worker_brings_the_group_back_and_the_run_resumes_itself(tmp_path, reference):
    run = tmp_path / "elastic"
    # Rank 1 dies at the start of step 10. Checkpoint 8 is not healthy yet (3 clean steps, at
    # step 11), so the group resumes from step 4's and does steps 5-9 again.
    crash = "guard.inject=[{step: 10, kind: crash, rank: 1}]"
    done = _genlab(
        "train",
        "examples/lm.yaml",
        *CFG,
        crash,
        "--run-dir",
        run,
        "--nproc-per-node",
        "2",
        "--max-restarts",
        "1",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert _losses(run) == pytest.approx(_losses(reference), rel=REL)
    assert [r["step"] for r in read_metrics(run)] == list(range(1, 13))  # nothing twice
    [event] = _events(run)
    assert (event["step"], event["kind"], event["action"]) == (4, "restart", "resume")
    assert event["detail"]["from"] == "step-4" and event["detail"]["lost_s"] > 0
    fired = [json.loads(x) for x in (run / "faults.jsonl").read_text().splitlines()]
    assert fired == [{"step": 10, "kind": "crash", "rank": 1}]  # once
    account = json.loads((run / "metrics.json").read_text())["goodput"]
    assert account["restarts"] == 1 and account["restart_s"] >= event["detail"]["lost_s"]
    assert "resumed from step-4" in done.stderr
    # The console summary's last line says the same as metrics.json.
    [line] = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.startswith("goodput ")]
    assert f"goodput {account['goodput']:.1%} of {account['wall_s']:.1f}s wall" in line
    assert f"restarts {account['restart_s']:.1f}s" in line and line.endswith("(1 restart)")


@pytest.mark.multiproc
def test_one_restarted_process_logs_exactly_what_an_uninterrupted_run_logs(tmp_path, reference):
    # The same world size as the reference: after the restart every logged value is the same
    # to the last bit (weights, optimizer, RNG and data position come from step 4's checkpoint).
    run = tmp_path / "one"
    crash = "guard.inject=[{step: 10, kind: crash}]"
    done = _genlab("train", "examples/lm.yaml", *CFG, crash, "--run-dir", run, "--max-restarts", 1)
    assert done.returncode == 0, done.stderr[-3000:]
    assert loss_keys(read_metrics(run)) == loss_keys(read_metrics(reference))
    assert [e["detail"]["from"] for e in _events(run)] == ["step-4"]
    final, ref = (json.loads((r / "metrics.json").read_text()) for r in (run, reference))
    assert final["val/loss"] == ref["val/loss"] and final["goodput"]["restarts"] == 1


@pytest.mark.multiproc
def test_a_user_error_is_not_retried(tmp_path):
    run = tmp_path / "run"
    done = _genlab(
        "train",
        "examples/lm.yaml",
        *TINY,
        "data.source=missing.txt",
        "--run-dir",
        run,
        "--max-restarts",
        "2",
    )
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("genlab: error")]
    assert len(errors) == 1 and "missing.txt" in errors[0]  # reported once, not three times
    assert "Traceback" not in done.stderr and not run.exists()


def test_a_restarted_worker_repeats_a_recorded_exit_code(tmp_path, monkeypatch):
    state = tmp_path / "launch"
    state.mkdir()
    monkeypatch.setenv(elastic.LAUNCH_STATE, str(state))
    monkeypatch.setenv(elastic.RESTART_COUNT, "0")
    elastic.record_exit(3)
    assert elastic.recorded_exit() is None  # a first attempt always runs
    monkeypatch.setenv(elastic.RESTART_COUNT, "1")
    run = tmp_path / "run"
    assert main(["train", "examples/lm.yaml", *TINY, "--run-dir", str(run)]) == 3
    assert not run.exists()  # it did nothing


def test_a_crash_names_an_existing_rank(tmp_path, capsys):
    crash = "guard.inject=[{step: 3, kind: crash, rank: 1}]"
    code = main(["train", "examples/lm.yaml", *TINY, crash, "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "names rank 1, but the run has 1 process" in err
    assert not (tmp_path / "r").exists()
    bad = main(
        ["train", "examples/lm.yaml", *TINY, "guard.inject=[{step: 3, kind: nan_loss, rank: 1}]"]
    )
    assert bad == 2 and "only applies to kind crash" in capsys.readouterr().err
