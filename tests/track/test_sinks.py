"""The sink composition: a failing sink is switched off with one warning while the others
go on, a stuck sink never blocks the caller (its records are dropped and counted), a tool that
is not installed is one line and exit 2 before anything is written, and only rank 0 writes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from genlab import config
from genlab.track.rundir import RunDir
from genlab.track.sinks import BackgroundSinks, RunEnd, SinkList, enabled_sinks, open_sinks
from genlab.training.distributed import Runtime
from testkit import TINY


class Recorder:
    """A sink that keeps what it gets; `fail_at` makes its n-th write raise."""

    def __init__(self, fail_at: int | None = None, gate: threading.Event | None = None):
        self.records: list[dict] = []
        self.ended: RunEnd | None = None
        self.fail_at = fail_at
        self.gate = gate
        self.entered = threading.Event()

    def write(self, record):
        self.entered.set()
        if self.gate is not None:
            self.gate.wait()
        if self.fail_at is not None and len(self.records) + 1 == self.fail_at:
            raise OSError("No space left on device")
        self.records.append(dict(record))

    def write_event(self, event):
        pass

    def add_samples(self, step, files):
        pass

    def flush(self):
        pass

    def close(self, end):
        self.ended = end


def test_a_failing_sink_warns_once_and_the_others_get_everything():
    bad, good, warnings = Recorder(fail_at=3), Recorder(), []
    sinks = BackgroundSinks({"bad": lambda: bad, "good": lambda: good}, warnings.append)
    for step in range(1, 11):
        sinks.write({"step": step, "train/loss": 1.0 / step})
    sinks.close(RunEnd("finished", {"val/loss": 0.5}))
    assert [r["step"] for r in good.records] == list(range(1, 11))
    assert good.ended == RunEnd("finished", {"val/loss": 0.5})
    assert [r["step"] for r in bad.records] == [1, 2] and bad.ended is None
    assert len(warnings) == 1 and "bad failed" in warnings[0] and "No space left" in warnings[0]
    assert sinks.failed == {"bad": "No space left on device"}


def test_a_sink_that_cannot_open_is_switched_off():
    good, warnings = Recorder(), []

    def refuse():
        raise ConnectionError("server down")

    sinks = BackgroundSinks({"down": refuse, "good": lambda: good}, warnings.append)
    sinks.write({"step": 1})
    sinks.close(RunEnd("finished"))
    assert good.records == [{"step": 1}]
    assert len(warnings) == 1 and "down failed (server down)" in warnings[0]


def test_a_stuck_sink_never_blocks_the_caller():
    gate = threading.Event()  # the sink waits on it: a tool that hangs
    stuck, warnings = Recorder(gate=gate), []
    sinks = BackgroundSinks(
        {"stuck": lambda: stuck}, warnings.append, max_queue=5, close_timeout=0.2
    )
    sinks.write({"step": 1})
    assert stuck.entered.wait(60)  # the tool took record 1 and hangs on it
    done = threading.Event()

    def train():
        for step in range(2, 101):
            sinks.write({"step": step})
        done.set()

    threading.Thread(target=train, daemon=True).start()
    assert done.wait(60), "write() blocked on a stuck sink"
    assert not gate.is_set() and stuck.records == []  # all 100 returned while it hung
    sinks.close(RunEnd("finished"))
    gate.set()
    assert any("did not finish" in w for w in warnings)
    dropped = [w for w in warnings if "dropped" in w]
    assert len(dropped) == 1 and "dropped 94 records" in dropped[0]  # 1 taken + 5 queued kept


def test_only_rank_zero_writes(tmp_path: Path):
    cfg = config.load(None, [*TINY, "track.tensorboard=true"])
    run = RunDir(tmp_path)

    class Rank1(Runtime):
        rank = 1

    import torch

    quiet = Rank1(torch.device("cpu")).sinks(cfg, run, 0)
    assert isinstance(quiet, SinkList) and quiet.sinks == []
    quiet.write({"step": 1})
    quiet.close(RunEnd("finished"))
    assert list(tmp_path.iterdir()) == []
    assert enabled_sinks(cfg.track) == ["tensorboard"]
    main = open_sinks(config.load(None, TINY), run, 0)
    main.write({"step": 1, "train/loss": 2.0})
    main.close(RunEnd("finished"))
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1, "train/loss": 2.0}\n'


def test_a_missing_tracking_tool_is_one_line_and_exit_2(tmp_path: Path):
    """Through the real command, in a Python where `import mlflow` fails (sitecustomize hides
    it), nothing is written."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['mlflow'] = None\n")
    (tmp_path / "empty.yaml").write_text("name: nodep\n")
    path = os.pathsep.join(p for p in (str(hide), os.environ.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("genlab")), "train", "empty.yaml", *TINY,
         "track.mlflow=true", "--run-dir", "run"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "'mlflow' is not installed" in lines[0] and "pip install 'genlab[track]'" in lines[0]
    assert not (tmp_path / "run").exists()
