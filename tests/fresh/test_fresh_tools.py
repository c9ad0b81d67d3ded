"""Fresh processes for the commands around training: two processes with a crash and restart,
`genlab tune`, `report` / `runs` / `compare`, and `compress`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from freshkit import IMAGE_METRICS, TINY_TEXT, family_overrides, genlab


@pytest.mark.multiproc
def test_two_processes_restart_after_a_crash_and_resume_in_fresh_processes(workdir):
    # `genlab train --nproc-per-node 2 --max-restarts 1`: rank 1 dies at step 8, the group
    # comes back and resumes from step 5's checkpoint (healthy two clean steps after it) by
    # itself; then `genlab resume --nproc-per-node 2` extends the run.
    run = workdir / "two-processes"
    crash = "guard.inject=[{step: 8, kind: crash, rank: 1}]"
    two = ["--nproc-per-node", 2]
    trained = genlab(
        "train", "empty.yaml", *TINY_TEXT, "train.max_steps=10", crash, "--run-dir", run,
        *two, "--max-restarts", 1, cwd=workdir, ok=False,
    )  # fmt: skip
    # (a surviving rank may print the peer's loss before the agent stops it: no
    # traceback check here, the outcome is what counts)
    assert trained.returncode == 0, trained.stderr[-3000:]
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    assert [(e["kind"], e["detail"]["from"]) for e in events] == [("restart", "step-5")]

    genlab("resume", run, "train.max_steps=14", *two, cwd=workdir)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 15))  # each step once, across the restart and the resume
    final = json.loads((run / "metrics.json").read_text())
    assert final["step"] == 14 and final["goodput"]["restarts"] == 1


def test_genlab_tune_works_in_a_fresh_process(workdir):
    """`genlab tune` through the real command: a 2-trial study with the default sampler
    (`auto`, which says it picks GP for one numeric param) on the tiny text model (trials,
    summary, trials.csv, best.yaml), then best.yaml trains as a config of its own."""
    import csv

    import yaml

    space = {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}
    tune = {"n_trials": 2, "space": space}
    (workdir / "tune.yaml").write_text(yaml.safe_dump({"name": "fresh-tune", "tune": tune}))
    study = workdir / "study"
    out = genlab("tune", "tune.yaml", *TINY_TEXT, "train.max_steps=6", "--study-dir", study,
                 cwd=workdir)  # fmt: skip
    assert "2 complete, 0 pruned, 0 failed" in out.stdout and "study fresh-tune" in out.stdout
    assert "sampler: gp (auto: 1 numeric param, 2 trials)" in out.stderr
    assert "sampler gp (auto: 1 numeric param, 2 trials)" in out.stdout  # the summary
    rows = list(csv.DictReader((study / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE"]
    assert all(1e-3 <= float(r["optim.lr"]) <= 1e-2 for r in rows)
    best = yaml.safe_load((study / "best.yaml").read_text())
    assert "tune" not in best and best["optim"]["lr"] in [float(r["optim.lr"]) for r in rows]
    genlab("train", study / "best.yaml", "--run-dir", workdir / "tuned", cwd=workdir)
    assert json.loads((workdir / "tuned" / "metrics.json").read_text())["step"] == 6


def test_report_runs_and_compare_in_fresh_processes(workdir):
    """`genlab report` (a run and a study), `genlab runs` and `genlab compare` as a user runs
    them; train and tune write report.html at their end by themselves."""
    short = [*TINY_TEXT, "train.max_steps=4"]
    for name, seed in (("report-a", 1), ("report-b", 2)):
        genlab("train", "empty.yaml", *short, f"seed={seed}", "--run-dir", name, cwd=workdir)
        assert (workdir / name / "report.html").is_file()
    (workdir / "report-a" / "report.html").unlink()
    out = genlab("report", "report-a", cwd=workdir)
    assert out.stdout.strip() == str(Path("report-a") / "report.html")
    assert "Stability timeline" in (workdir / "report-a" / "report.html").read_text()

    listing = genlab("runs", ".", cwd=workdir).stdout
    for name in ("report-a", "report-b"):
        assert re.search(rf"{name}\s.*gpt.*finished.*4/4", listing), listing

    genlab("compare", "report-a", "report-b", "--out", "cmp.html", cwd=workdir)
    page = (workdir / "cmp.html").read_text()
    assert "<code>seed</code>" in page and "mean ± std" in page  # differ only in seed

    (workdir / "tune.yaml").write_text(
        "name: fresh-study\ntune:\n  method: grid\n  final: {top_k: 0}\n"
        "  space:\n    optim.lr: {type: categorical, choices: [0.003]}\n"
    )
    genlab("tune", "tune.yaml", *short, "--study-dir", "study", cwd=workdir)
    assert "Trials" in (workdir / "study" / "report.html").read_text()
    genlab("report", "study", "--out", "study.html", cwd=workdir)
    assert (workdir / "study.html").read_text().count("<tr class=") == 1

    bad = genlab("report", "no-such-run", cwd=workdir, ok=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "does not exist" in bad.stderr


COMPRESS = {  # family -> compress settings run on it by the real command
    "char-gpt": [
        "compress.prune.method=wanda",
        "compress.quantize=int8_dynamic",
        "compress.recover_steps=4",
    ],
    "vae": ["compress.prune.method=structured", "compress.quantize=bf16"],
}


@pytest.mark.parametrize("family", sorted(COMPRESS))
def test_compress_works_in_a_fresh_process(family, workdir):
    """train → compress (recovery through the loop for the GPT) → eval → generate → eval on
    the test split, each its own `genlab` process, on the compressed run directory."""
    run = workdir / f"{family}-to-compress"
    overrides = family_overrides(family, Path("unused"), Path("unused"))
    genlab("train", "empty.yaml", *overrides, "train.max_steps=6", "--run-dir", run, cwd=workdir)
    small = run / "small"
    quick = ["compress.eval_windows=2", "compress.eval_samples=64", "compress.measure_speed=false"]
    genlab("compress", run, *COMPRESS[family], *quick, "--out", small, cwd=workdir)
    rows = json.loads((small / "compression.json").read_text())["rows"]
    assert rows[0]["name"] == "original" and len(rows) == 2
    assert rows[1]["params"] <= rows[0]["params"] and rows[1]["file_mb"] < rows[0]["file_mb"]
    if family in IMAGE_METRICS:
        metrics = IMAGE_METRICS[family]
        for split in ("val", "test"):
            args = ["--split", split, "--metrics", metrics, "--num-samples", "64"]
            genlab("eval", small, *args, cwd=workdir)
        done = json.loads((small / "metrics.json").read_text())
        assert "eval/test/recon_mse" in done and "eval/val/elbo" in done  # ELBO: compress's
        return
    genlab("eval", small, "--num-samples", "4", cwd=workdir)
    done = json.loads((small / "metrics.json").read_text())
    assert done["eval/val/perplexity"] > 1 and done["eval/val/bits_per_byte"] > 0
    out = genlab("generate", small, "--prompt", "The ", "--max-new-tokens", "8", cwd=workdir)
    assert out.stdout.startswith("The ") and len(out.stdout) > len("The ")
    genlab("eval", small, "--split", "test", "--metrics", "nll", "--num-samples", "2", cwd=workdir)
    assert "eval/test/nll" in json.loads((small / "metrics.json").read_text())
