"""Bad input to task classify through the real `genlab` command: one line on stderr naming the
problem, exit code 2, no traceback, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from clskit import TINY_CLASSIFY, genlab_cli, write_labelled_csv

from genlab import config
from genlab.data.corpus import split_corpus


def assert_user_error(proc, *needles: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines[0]) <= 300 + len("genlab: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "empty.yaml").write_text("name: bad\n")
    write_labelled_csv(tmp_path / "d.csv", {"math": 20, "files": 20, "net": 4})
    return tmp_path


def train(workdir: Path, *overrides: str):
    args = [*TINY_CLASSIFY, "data.source=d.csv", *overrides]
    return genlab_cli("train", "empty.yaml", *args, "--run-dir", "run", cwd=workdir)


def test_a_missing_label_field(workdir):
    proc = train(workdir, "data.label_field=null")
    assert_user_error(proc, "data.label_field", "d.csv")
    assert not (workdir / "run").exists()


def test_an_unknown_label_field(workdir):
    proc = train(workdir, "data.label_field=kind")
    assert_user_error(proc, "'kind'", "data.label_field", "fields present")
    assert not (workdir / "run").exists()


def test_a_label_absent_from_train(workdir):
    write_labelled_csv(workdir / "d.csv", {"math": 20, "files": 20, "net": 1})
    for seed in range(50):  # a seed that puts the lone 'net' document outside train
        cfg = config.load(None, [*TINY_CLASSIFY, f"data.source={workdir / 'd.csv'}",
                                 "data.split.stratify=false", f"seed={seed}"])  # fmt: skip
        if "net" not in {d.label for d in split_corpus(cfg.data, seed).train}:
            break
    proc = train(workdir, "data.split.stratify=false", f"seed={seed}")
    assert_user_error(proc, "label 'net'", "not in train")
    assert not (workdir / "run").exists()


def test_an_incompatible_family(workdir):
    proc = genlab_cli(
        "train", "empty.yaml", "task=classify", "model.family=gan", "data.source=stdlib-topics",
        cwd=workdir,
    )  # fmt: skip
    assert_user_error(proc, "model.family is 'gan'", "stdlib-topics")
    proc = genlab_cli(
        "train", "empty.yaml", "task=classify", "model.family=vae", "data.source=digits",
        "finetune.init_from=nowhere", "finetune.method=lora", cwd=workdir,
    )  # fmt: skip
    assert_user_error(proc, "finetune.method lora", "'vae'")
    assert not (workdir / "runs").exists()


def test_a_class_with_fewer_examples_than_folds(workdir):
    (workdir / "cv.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "cv",
                "tune": {
                    "method": "grid",
                    "metric": "val/f1_macro",
                    "direction": "maximize",
                    "cv": {"folds": 5},
                    "space": {"optim.lr": {"type": "categorical", "choices": [1e-3]}},
                },
            }
        )
    )
    args = [*TINY_CLASSIFY, "data.source=d.csv", "--study-dir", "study"]
    proc = genlab_cli("tune", "cv.yaml", *args, cwd=workdir)
    assert_user_error(proc, "class 'net'", "fewer than the 5")
    assert not (workdir / "study").exists()


def test_predict_needs_a_classify_run_and_readable_input(workdir):
    assert_user_error(genlab_cli("predict", "nowhere", "--input", "d.csv", cwd=workdir), "nowhere")
    (workdir / "lm").mkdir()
    (workdir / "lm" / "config.yaml").write_text(config.load(None, []).to_yaml())
    proc = genlab_cli("predict", "lm", "--input", "d.csv", cwd=workdir)
    assert_user_error(proc, "task 'generate'", "genlab generate")
