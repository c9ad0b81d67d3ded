"""`genlab runs` tells finished, aborted, crashed and running runs apart; `genlab compare`
shows only the config keys that differ, best and final values, and mean ± std over runs that
differ only in their seed (checked against numpy)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

import genlab
from genlab.errors import ConfigError, GuardAbort
from genlab.track.flat import flatten
from genlab.track.fmt import number
from genlab.track.rundir import RunDir, RunLock
from testkit import TINY, run_cli

SHORT = [*TINY, "train.max_steps=10", "train.eval_every=5", "train.checkpoint_every=5"]
ABORTS = [  # NaN at every step from 3: the third event aborts
    "guard.abort_after=3",
    "guard.inject=[" + ", ".join(f"{{step: {s}, kind: nan_loss}}" for s in range(3, 9)) + "]",
]


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    for seed in (1, 2):
        genlab.train(None, root / f"seed{seed}", [*SHORT, f"seed={seed}", "track.report=false"])
    genlab.train(None, root / "fast", [*SHORT, "seed=1", "optim.lr=1e-2", "track.report=false"])
    with pytest.raises(GuardAbort):
        genlab.train(None, root / "aborted", [*SHORT, *ABORTS])
    crashed = root / "group" / "crashed"  # runs are found below subdirectories too
    shutil.copytree(root / "seed1", crashed)
    (crashed / "metrics.json").unlink()  # the process died before its end
    shutil.copytree(root / "seed2", root / "live")
    # What `genlab compress` then `genlab eval` leave: no training log of its own.
    compressed = root / "seed1" / "compressed" / "int8"
    compressed.mkdir(parents=True)
    shutil.copy(root / "seed1" / "config.yaml", compressed / "config.yaml")
    rows = [{"model": "original", "file_mb": 0.1}, {"model": "int8", "file_mb": 0.05}]
    (compressed / "compression.json").write_text(json.dumps({"rows": rows}))
    (compressed / "metrics.json").write_text('{"step": 10, "eval/val/perplexity": 12.5}')
    return root


def test_runs_tells_the_statuses_apart(runs_root: Path, capsys):
    lock = RunLock(RunDir(runs_root / "live"))  # a process training it right now
    assert lock.acquire()
    try:
        summaries = {s.path.relative_to(runs_root).as_posix(): s for s in genlab.runs(runs_root)}
        assert run_cli("runs", runs_root) == 0
    finally:
        lock.release()
    assert {k: s.status for k, s in summaries.items()} == {
        "aborted": "aborted",
        "fast": "finished",
        "group/crashed": "crashed",
        "live": "running",
        "seed1": "finished",
        "seed1/compressed/int8": "compressed",
        "seed2": "finished",
    }
    compressed = summaries["seed1/compressed/int8"]
    assert (compressed.step, compressed.metric, compressed.value) == (
        10,
        "eval/val/perplexity",
        12.5,
    )
    assert run_cli("report", compressed.path) == 0  # a compressed run has its page too
    assert "file_mb" in (compressed.path / "report.html").read_text()
    aborted = summaries["aborted"]
    assert aborted.step == 5 and aborted.guard_events == 3
    final = json.loads((runs_root / "seed1" / "metrics.json").read_text())
    assert summaries["seed1"].metric == "val/loss" and summaries["seed1"].value == final["val/loss"]
    assert summaries["seed1"].step == 10 and summaries["seed1"].family == "gpt"
    table = capsys.readouterr().out
    for name, status in (("aborted", "aborted"), ("live", "running"), ("crashed", "crashed")):
        assert re.search(rf"{name}.*{status}", table), table
    # The aborted run's report was written (after the abort too) with the diagnosis on it.
    page = (runs_root / "aborted" / "report.html").read_text()
    assert "Diagnosis" in page and "nonfinite_loss" in page and ">aborted<" in page
    assert run_cli("runs", runs_root / "missing-dir") == 2


def test_compare_shows_only_the_keys_that_differ(runs_root: Path, tmp_path: Path, capsys):
    a, b = runs_root / "seed1", runs_root / "fast"
    out = tmp_path / "cmp.html"
    assert run_cli("compare", a, b, "--out", out) == 0
    assert capsys.readouterr().out.strip() == str(out)
    flat = [flatten(yaml.safe_load((p / "config.yaml").read_text())) for p in (a, b)]
    differing = sorted(k for k in flat[0] if flat[0][k] != flat[1][k])
    assert differing == ["optim.lr"]  # both are named "run", seeds are equal
    page = out.read_text()
    table = page[page.index('id="config"') : page.index('id="metrics"')]
    assert re.findall(r"<td><code>([^<]+)</code></td>", table) == differing
    assert "mean ± std" not in page  # not a seed repeat
    for run in (a, b):  # final val/loss of each run, side by side
        final = json.loads((run / "metrics.json").read_text())
        assert number(final["val/loss"]) in page


def test_runs_that_differ_only_in_seed_get_mean_and_std(runs_root: Path, tmp_path: Path):
    runs = [runs_root / "seed1", runs_root / "seed2"]
    out = genlab.compare(runs, tmp_path / "seeds.html")
    page = out.read_text()
    values = [json.loads((r / "metrics.json").read_text())["val/loss"] for r in runs]
    mean, std = np.mean(values), np.std(values, ddof=1)
    row = re.search(r"<code>val/loss</code>.*?</tr>", page, re.S).group(0)
    assert f"{number(float(mean))} ± {number(float(std), 2)}" in row
    assert "(n=2)" in row


def test_compare_needs_two_runs(runs_root: Path):
    with pytest.raises(ConfigError, match="at least two runs"):
        genlab.compare([runs_root / "seed1"])
