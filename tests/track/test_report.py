"""report.html of a run: one self-contained file (no http(s) source, plotly.js inlined once),
its figures carry metrics.jsonl's numbers, the guard's events, samples, the data report and
the config are on it; training-time estimates and full evaluations are shown apart; a report
that fails never fails the run."""

from __future__ import annotations

import html
import json
import re
import shutil
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

import genlab
from genlab.errors import RunDirError
from genlab.track.logs import read_jsonl
from testkit import TINY, run_cli

REMOTE = re.compile(
    r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?(?:https?:)?//"""
)


def page_parts(page: str) -> tuple[str, list[dict]]:
    """The page without its inline scripts, and its figures (the JSON page.js draws)."""
    figures = re.search(
        r'<script type="application/json" id="genlab-figures">(.*?)</script>', page, re.S
    )
    assert figures is not None
    markup = re.sub(r"<script\b[^>]*>.*?</script>", "<script></script>", page, flags=re.S)
    return markup, json.loads(figures.group(1))


def trace(figures: list[dict], title: str, name: str) -> dict:
    figure = next(f for f in figures if f["layout"]["title"]["text"] == title)
    return next(t for t in figure["data"] if t["name"] == name)


def test_the_run_report_is_one_self_contained_file(tracked_run: Path):
    page = (tracked_run / "report.html").read_text()
    markup, figures = page_parts(page)
    assert not REMOTE.search(markup), REMOTE.search(markup)
    assert "<link" not in markup and "<iframe" not in markup
    assert not re.search(r"<script[^>]+\bsrc=", page)  # every script is inline
    assert page.count("* plotly.js v") == 1  # the bundle once, whatever the number of plots
    placeholders = re.findall(r'<div class="figure" id="figure-(\d+)"></div>', markup)
    assert [int(i) for i in placeholders] == list(range(len(figures))) and len(figures) >= 6


def test_the_curves_carry_the_logged_numbers_and_the_guard_events(tracked_run: Path):
    records = read_jsonl(tracked_run / "metrics.jsonl")
    _, figures = page_parts((tracked_run / "report.html").read_text())
    loss = trace(figures, "loss", "train/loss")
    assert loss["x"] == [r["step"] for r in records]
    expected = [None if r["train/loss"] != r["train/loss"] else r["train/loss"] for r in records]
    assert loss["y"] == expected and loss["y"][6] is None  # step 7's NaN is a gap
    val = trace(figures, "loss", "val/loss")
    assert list(zip(val["x"], val["y"])) == [
        (r["step"], r["val/loss"]) for r in records if "val/loss" in r
    ]
    skip = trace(figures, "loss", "guard: skip")
    assert skip["x"] == [7] and "nonfinite_loss" in skip["text"][0]
    lr = trace(figures, "learning rate", "train/lr")
    assert lr["y"] == [r["train/lr"] for r in records]
    # A rate and a fraction of the matmul peak never share an axis.
    rates = next(f for f in figures if f["layout"]["title"]["text"] == "throughput")
    assert [t["name"] for t in rates["data"]] == ["throughput/tokens_per_s"]
    mfu = trace(figures, "model FLOPs utilization", "throughput/mfu")
    assert mfu["y"] == [r["throughput/mfu"] for r in records]


def test_events_samples_data_and_config_are_on_the_page(tracked_run: Path):
    page = (tracked_run / "report.html").read_text()
    stability = page[page.index('id="stability"') : page.index('id="samples"')]
    assert re.search(r">7</td><td>nonfinite_loss</td>.*?>skip<", stability, re.S)
    sample = (tracked_run / "samples" / "step-20.txt").read_text()
    shown = re.search(r"<summary>step 20</summary><pre class=\"sample\">(.*?)</pre>", page, re.S)
    assert shown is not None and html.unescape(shown.group(1)) == sample
    assert "<" not in shown.group(1)  # escaped: sample text is never markup
    data = json.loads((tracked_run / "data.json").read_text())
    report = json.loads((Path(data["dataset_dir"]) / "report.json").read_text())
    section = page[page.index('id="data"') : page.index('id="config"')]
    for step in report["steps"]:
        removed = step["before"] - step["after"]
        cells = rf"<td>{step['step']}</td>\s*<td[^>]*>{step['before']}</td>.*?>{removed}</td>"
        assert re.search(cells, section, re.S), step
    config = re.search(r'<pre class="config">(.*?)</pre>', page, re.S)
    assert html.unescape(config.group(1)) == (tracked_run / "config.yaml").read_text()
    assert (
        "tensorboard --logdir" in page
        and json.loads((tracked_run / "mlflow.json").read_text())["run_id"] in page
    )


def test_estimates_and_full_evaluations_are_shown_apart(tracked_run: Path, tmp_path: Path):
    run = tmp_path / "evaluated"
    shutil.copytree(tracked_run, run)
    (run / "mlflow.json").unlink()  # a copy: not the tracked run's MLflow run
    genlab.evaluate(run, metrics="perplexity,nll", num_samples=4)
    final = json.loads((run / "metrics.json").read_text())
    page = (run / "report.html").read_text()  # genlab eval rewrote it
    evaluation = page[page.index('id="evaluation"') : page.index('id="data"')]
    estimates, full = evaluation.split("Full evaluations")
    assert "val/perplexity" in estimates and "eval/val" not in estimates.replace("eval/&lt;", "")
    from genlab.track.fmt import number

    assert f">{number(final['eval/val/perplexity'])}</td>" in full
    assert f">{number(final['val/perplexity'])}</td>" in estimates
    assert "<h4>val split</h4>" in full and ">perplexity</td>" in full and ">nll</td>" in full
    assert "evaluated_step" not in estimates


def test_compression_tables_render_whatever_their_shape(tracked_run: Path, tmp_path: Path):
    run = tmp_path / "compressed"
    shutil.copytree(tracked_run, run)
    table = {
        "method": "int8",
        "rows": [
            {"variant": "original", "params": 17152, "file_mb": 0.07, "val/loss": 3.61},
            {"variant": "int8", "params": 17152, "file_mb": 0.02, "val/loss": 3.63},
        ],
        "kept_in_full_precision": ["lm_head"],
    }
    (run / "compression.json").write_text(json.dumps(table))
    page = genlab.report(run).read_text()
    section = page[page.index('id="compression"') : page.index('id="config"')]
    assert "<th>variant</th><th>params</th><th>file_mb</th><th>val/loss</th>" in section
    assert re.search(r"<td>int8</td><td[^>]*>17,152</td><td[^>]*>0.02</td>", section)
    assert "<td>method</td><td>int8</td>" in section and "lm_head" in section


def test_a_report_that_fails_never_fails_the_run(tmp_path: Path, monkeypatch):
    import genlab.track.report as report

    def broken(*args, **kwargs):
        raise RuntimeError("template exploded")

    monkeypatch.setattr(report, "write_report", broken)
    out = StringIO()
    result = genlab.train(
        None, tmp_path / "run", [*TINY, "train.max_steps=3"], console=Console(file=out)
    )
    assert result.step == 3 and (tmp_path / "run" / "metrics.json").is_file()
    assert "report.html not written: template exploded" in out.getvalue()
    assert not (tmp_path / "run" / "report.html").exists()


def test_report_off_and_bad_paths(tmp_path: Path, capsys):
    run = tmp_path / "run"
    genlab.train(None, run, [*TINY, "train.max_steps=2", "track.report=false"])
    assert not (run / "report.html").exists()
    assert run_cli("report", run, "--out", tmp_path / "elsewhere.html") == 0
    assert (tmp_path / "elsewhere.html").is_file() and not (run / "report.html").exists()
    assert capsys.readouterr().out.strip() == str(tmp_path / "elsewhere.html")
    assert run_cli("report", tmp_path / "nothing") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err and "run directory" in err
    with pytest.raises(RunDirError, match="neither a run nor a study"):
        genlab.report(tmp_path)
