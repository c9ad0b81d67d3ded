"""`genlab export` through the real command: a success, then every kind of bad input as one
line with exit code 2 and nothing written; and a crash mid-export leaves nothing behind."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from exportkit import genlab_cli

import genlab
from genlab.errors import ConfigError

SRC = str(Path(genlab.__file__).parents[1])  # this checkout's genlab, for PYTHONPATH


def _unimportable(site: Path, module: str) -> Path:
    """A directory that, first on PYTHONPATH, makes `import module` fail as if not installed."""
    (site / module).mkdir(parents=True)
    (site / module / "__init__.py").write_text("raise ImportError('simulated: not installed')\n")
    return site


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _variant(run: Path, where: Path, **model: object) -> Path:
    """A copy of `run` whose config.yaml sets `model.<key>: value` (refused before any load)."""
    copy = where / "-".join(f"{k}-{v}" for k, v in model.items())
    shutil.copytree(run, copy)
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["model"].update(model)
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    return copy


def test_cli_refuses_a_full_directory_then_overwrites_it(lm_runs, tmp_path):
    run, out = lm_runs["char"], tmp_path / "out"
    genlab.export(run, "gguf", out, gguf_type="f32")
    before = _tree(out)

    again = genlab_cli("export", run, "--format", "gguf", "--out", out, cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [again.stderr.strip()]
    assert "not empty" in again.stderr and "--overwrite" in again.stderr
    assert _tree(out) == before

    (out / "stray.txt").write_text("replaced by --overwrite")
    # Without transformers installed the export still completes; only its optional check
    # through transformers' GGUF loader is skipped (and says so).
    hidden = _unimportable(tmp_path / "no-transformers", "transformers")
    over = genlab_cli(
        "export",
        run,
        "--format",
        "gguf",
        "--out",
        out,
        "--overwrite",
        cwd=tmp_path,
        extra_env={"PYTHONPATH": f"{hidden}:{SRC}"},
    )
    assert over.returncode == 0, over.stderr[-2000:]
    assert over.stdout.strip() == f"exported to {out} (parity ok)"
    assert not (out / "stray.txt").exists()
    assert (out / "model-f16.gguf").is_file() and not (out / "model-f32.gguf").exists()
    record = json.loads((out / "export.json").read_text())
    assert record["format"] == "gguf" and record["options"]["gguf_type"] == "f16"
    skipped = {"skipped": "transformers is not installed"}
    assert record["parity"]["transformers"] == skipped and record["parity"]["ok"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-transformers", "out"]


def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(lm_runs, tmp_path):
    run = lm_runs["char"]
    no_checkpoints = tmp_path / "fresh-run"
    no_checkpoints.mkdir()
    shutil.copy(run / "config.yaml", no_checkpoints / "config.yaml")
    unfit = _variant(run, tmp_path, qk_norm=True, bias=False)
    fake = _unimportable(tmp_path / "no-gguf", "gguf")
    cases = [
        (["export", run, "--format", "safetensors"], {}, ["unknown export format", "hf, onnx"]),
        (["export", no_checkpoints, "--format", "hf"], {}, ["no usable checkpoint"]),
        (["export", unfit, "--format", "hf"], {}, ["model.qk_norm: true", "model.bias: false"]),
        (
            ["export", run, "--format", "gguf"],
            {"PYTHONPATH": f"{fake}:{SRC}"},
            ["'gguf' is not installed", "pip install 'genlab[export]'"],
        ),
    ]
    runs = [run, no_checkpoints, unfit]
    before = {r: _tree(r) for r in runs}
    for args, env, words in cases:
        out = tmp_path / "never"
        proc = genlab_cli(*args, "--out", out, cwd=tmp_path, extra_env=env)
        message = proc.stderr.strip()
        assert proc.returncode == 2, (args, message[-1500:])
        assert len(message.splitlines()) == 1 and message.startswith("genlab: error:"), message
        assert len(message) <= 320, message
        for word in words:
            assert word in message, (word, message)
        assert not out.exists(), args
    assert {r: _tree(r) for r in runs} == before  # the runs are untouched
    assert not list(tmp_path.glob(".never.tmp-*"))


@pytest.mark.parametrize(
    ("run", "kwargs", "error", "words"),
    [
        ("vae", {"format": "hf"}, ConfigError, ["'vae'", "--format onnx"]),
        ("char", {"format": "hf", "adapter": True}, ConfigError, ["not a LoRA fine-tune"]),
        ("char", {"format": "onnx", "adapter": True}, ConfigError, ["--adapter", "--format hf"]),
        ("char", {"format": "gguf", "gguf_type": "q4"}, ConfigError, ["f32, f16, q8_0"]),
        ("char", {"format": "hf", "gguf_type": "f16"}, ConfigError, ["--gguf-type applies"]),
        ("char", {"format": "tflite"}, ConfigError, ["unknown export format 'tflite'"]),
    ],
)
def test_api_bad_input_raises_before_writing(
    run, kwargs, error, words, lm_runs, image_runs, tmp_path
):
    root = image_runs[run] if run == "vae" else lm_runs[run]
    before = _tree(root)
    with pytest.raises(error) as caught:
        genlab.export(root, out=tmp_path / "x", **kwargs)
    for word in words:
        assert word in str(caught.value)
    assert not (tmp_path / "x").exists() and _tree(root) == before


def test_out_may_not_be_the_run_itself(lm_runs):
    from genlab.errors import RunDirError

    run = lm_runs["char"]
    for out in (run, run.parent):
        with pytest.raises(RunDirError, match="the run directory itself"):
            genlab.export(run, "hf", out, overwrite=True)
    assert (run / "config.yaml").is_file()


def _failing_exporter(monkeypatch, error: BaseException) -> None:
    """Make the gguf exporter write a file, then fail with `error`."""
    from genlab.exporters import gguf as gguf_exporter
    from genlab.exporters.job import Exporter

    def write_then_fail(job, out):
        (out / "half.bin").write_bytes(b"\0" * 100)
        raise error

    original = gguf_exporter.EXPORTER
    replaced = Exporter(original.families, original.check, write_then_fail)
    monkeypatch.setattr(gguf_exporter, "EXPORTER", replaced)


def test_a_crash_mid_export_leaves_nothing(lm_runs, tmp_path, monkeypatch):
    _failing_exporter(monkeypatch, RuntimeError("a bug"))
    target = tmp_path / "a" / "b" / "export"
    with pytest.raises(RuntimeError, match="a bug"):
        genlab.export(lm_runs["char"], "gguf", target)
    assert list(tmp_path.iterdir()) == []  # neither the export nor the parents it created
    with pytest.raises(RuntimeError):
        genlab.export(lm_runs["char"], "gguf")
    assert not (lm_runs["char"] / "export").exists()


def test_a_full_disk_is_a_user_error_that_keeps_the_old_export(lm_runs, tmp_path, monkeypatch):
    import errno

    from genlab.errors import RunDirError

    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.txt").write_text("an earlier export")
    _failing_exporter(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(RunDirError, match="no space left"):
        genlab.export(lm_runs["char"], "gguf", out, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["previous.txt"]


@pytest.mark.parametrize("format", ["hf", "onnx"])
def test_an_export_prints_no_third_party_noise(format, lm_runs, tmp_path):
    """transformers imports its modeling code lazily, on the first model class used; that
    pulled in torchao, which printed a 'Failed to load ..._C_mxfp8...so' line per kernel
    library and torch's pytree deprecations on every `genlab export --format hf`; the ONNX
    exporter logged 'torchvision is not installed. Skipping ...' four times."""
    done = genlab_cli("export", lm_runs["char"], "--format", format, "--out", tmp_path / "x",
                      cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    noise = [
        line
        for line in done.stderr.splitlines()
        if "Failed to load" in line or re.match(r"[WE]\d{4} ", line) or "torchvision" in line
    ]
    assert noise == [], done.stderr
    if format == "hf" and importlib.util.find_spec("torchao") is not None:  # it can fail
        raw = subprocess.run(
            [sys.executable, "-c", "import transformers; transformers.GPT2LMHeadModel"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert "Failed to load" in raw.stderr
