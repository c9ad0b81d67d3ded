"""Every bad input is one clean line on stderr and exit code 2, never a traceback, and
nothing on disk is touched."""

from pathlib import Path

import pytest

from testkit import needs_sys, run_cli

BAD_CONFIGS = {
    "unknown key": "trian:\n  max_steps: 3\n",
    "unknown nested key": "optim:\n  lrr: 0.1\n",
    "negative lr": "optim:\n  lr: -0.001\n",
    "zero lr": "optim:\n  lr: 0\n",
    "wrong type": "train:\n  max_steps: many\n",
    "heads do not divide width": "model:\n  n_embd: 100\n  n_head: 3\n",
    "bad choice": "train:\n  precision: fp8\n",
    "bad optimizer": "optim:\n  name: lion\n",
    "bad decay": "schedule:\n  decay: exponential\n",
    "dropout out of range": "model:\n  dropout: 1.5\n",
    "zero batch": "train:\n  batch_size: 0\n",
    "section is a value": "model: 3\n",
    "not a mapping": "- a\n- b\n",
    "bad yaml": "model:\n  n_layer: [1, 2\n",
    "bad injection": "guard:\n  inject: [{step: 3, kind: meteor}]\n",
    "tokenizer": "data:\n  tokenizer: words\n",
}


@pytest.mark.parametrize("text", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config_is_one_clean_error(text, tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    run_dir = tmp_path / "run"
    code = run_cli("train", cfg, "--run-dir", run_dir)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("genlab: error: ")
    assert "config" in err
    assert "Traceback" not in err
    assert not run_dir.exists()


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_missing_config_file(tmp_path, capsys):
    assert run_cli("train", tmp_path / "nope.yaml") == 2
    assert "does not exist" in _one_error(capsys)


def test_bad_override_syntax(tmp_path, capsys):
    assert run_cli("train", "examples/lm.yaml", "optim.lr", "--run-dir", tmp_path / "r") == 2
    # argparse treats a bare word as an unknown argument (exit 2 from argparse itself)
    capsys.readouterr()


def test_missing_data_path(tmp_path, capsys):
    code = run_cli(
        "train", "examples/lm.yaml", f"data.source={tmp_path}/missing", "--run-dir", tmp_path / "r"
    )
    assert code == 2
    line = _one_error(capsys)
    assert "missing" in line and "neither a built-in corpus nor an existing path" in line
    assert not (tmp_path / "r").exists()


def test_empty_corpus(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("   \n\n")
    code = run_cli(
        "train", "examples/lm.yaml", f"data.source={corpus}", "--run-dir", tmp_path / "r"
    )
    assert code == 2
    assert "has no text" in _one_error(capsys)


def test_corpus_too_small_for_block(tmp_path, capsys):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("one paragraph\n\nanother paragraph\n")
    code = run_cli(
        "train", "examples/lm.yaml", f"data.source={corpus}", "--run-dir", tmp_path / "r"
    )
    assert code == 2
    assert "lower data.block_size" in _one_error(capsys)


def test_resume_of_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert run_cli("resume", tmp_path) == 2
    assert "is not a genlab run directory" in _one_error(capsys)


def test_generate_from_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert run_cli("generate", tmp_path) == 2
    assert "is not a genlab run directory" in _one_error(capsys)


def test_refuses_non_empty_run_dir_and_keeps_its_files(tmp_path, capsys, tiny_overrides):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    keep = run_dir / "precious.txt"
    keep.write_text("do not delete")
    code = run_cli("train", "examples/lm.yaml", *tiny_overrides, "--run-dir", run_dir)
    assert code == 2
    assert "is not empty; pass --overwrite" in _one_error(capsys)
    assert keep.read_text() == "do not delete"
    assert sorted(p.name for p in Path(run_dir).iterdir()) == ["precious.txt"]


def test_bad_config_with_overwrite_keeps_existing_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text("{}\n")
    code = run_cli("train", "examples/lm.yaml", "optim.lr=-1", "--run-dir", run_dir, "--overwrite")
    assert code == 2
    assert (run_dir / "metrics.jsonl").read_text() == "{}\n"


FAST_REFUSALS = {
    "train, no such data": ["train", "none", "data.source=no-such-file.txt"],
    "train, bad config": ["train", "none", "train.max_steps=-1"],
    "train, run dir under a file": ["train", "none", "--run-dir", "afile/run"],
    # Writable by its permission bits for root, refused by the filesystem: found by a probe.
    "train, run dir that cannot be made": ["train", "none", "--run-dir", "/sys/genlab-run"],
    "data prepare, out that cannot be made": ["data", "prepare", "none", "--out", "/sys/ds"],
    "resume": ["resume", "no-such-run"],
    "eval": ["eval", "no-such-run"],
    "generate": ["generate", "no-such-run"],
    "export": ["export", "no-such-run", "--format", "onnx"],
    "compress": ["compress", "no-such-run"],
    "report": ["report", "no-such-run"],
}


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(argv, id=name, marks=[needs_sys] if "/sys/" in " ".join(argv) else [])
        for name, argv in FAST_REFUSALS.items()
    ],
)
def test_bad_input_is_refused_before_torch_is_imported(argv, tmp_path):
    """A mistyped path is news in half a second, not after torch's ~3 s of imports: each
    command checks what it was given first. The real `genlab` script in a new process, with
    Python's -X importtime listing every module it imported (on stderr, beside the error).
    Nothing is written either: no dataset prepared, no run directory begun."""
    import os
    import subprocess
    import sys

    (tmp_path / "none").write_text("name: fast\n")
    (tmp_path / "afile").write_text("x")
    genlab = str(Path(sys.executable).with_name("genlab"))
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", genlab, *argv],
        cwd=tmp_path,
        env={**os.environ, "GENLAB_CACHE_DIR": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stderr.splitlines()
    imported = {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}
    said = [line for line in lines if not line.startswith("import time:")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "genlab.cli" in imported and "torch" not in imported
    assert len(said) == 1 and said[0].startswith("genlab: error: "), said
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "none"]
