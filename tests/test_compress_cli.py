"""`genlab compress` end to end: compressed runs reload in a fresh process (the real
`genlab generate` / `genlab eval` commands) with the outputs the same model gives in memory
before saving; recovery fine-tuning resumes exactly after kill -9 of the real command; the
quality gate falls back and reports; bad input through the real command is one line, exit 2,
nothing written. Source runs are trained, and most compressions run, in this process (the
command's own path is the kill -9 and bad-input tests' and the fresh-process matrix's)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import genlab as genlab_api
from freshkit import TINY_IMAGES, TINY_TEXT, genlab
from genlab.compression.gate import QualityGateError
from genlab.compression.prune import make_plan
from genlab.compression.quantize import quantizable, quantize_layers
from genlab.compression.subject import load_subject, sampling_from
from genlab.config import load as load_config
from genlab.data.corpus import split_corpus
from genlab.data.lm import DOC_SEPARATOR
from genlab.errors import CheckpointError, ConfigError
from genlab.evaluation.run import likelihood_metrics, load_run_model, pick_checkpoint
from genlab.track.rundir import open_existing

GENLAB = str(Path(sys.executable).with_name("genlab"))
QUICK = ["compress.eval_windows=2", "compress.measure_speed=false", "compress.eval_samples=64"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory):
    """A directory holding the corpus, the data cache and the runs; the in-process steps
    run there too (with one torch thread), so they share the commands' caches."""
    from pydoc_data.topics import topics

    root = tmp_path_factory.mktemp("compress")
    (root / "empty.yaml").write_text("name: compress\n")
    docs = [topics[k].strip() for k in sorted(topics)[:40]]
    (root / "corpus.txt").write_text("\n\n\n".join(docs) + "\n")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("GENLAB_CACHE_DIR", str(root / "cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield root
    torch.set_num_threads(threads)


def train(workdir: Path, name: str, *overrides: str) -> Path:
    """A tiny run trained in this process (the commands under test run on it)."""
    run = workdir / name
    genlab_api.train(genlab_api.load_config(workdir / "empty.yaml", list(overrides)), run)
    return run


def compress(run: Path, *overrides: str, out: Path | None = None) -> Path:
    """genlab.compress in this process (the command itself is exercised by the kill -9,
    bad-input and fresh-process tests); returns the output directory."""
    return genlab_api.compress(run, list(overrides), out).out_dir


@pytest.fixture(scope="module")
def gpt_run(workdir: Path) -> Path:
    return train(workdir, "gpt", *TINY_TEXT, "train.max_steps=30")


def in_memory(run: Path, overrides: list[str]):
    """The compressed model built in this process with the library's own steps (what the
    command saves), and its subject (source model, calibration, data)."""
    cfg = load_config(run / "config.yaml", overrides)
    info = pick_checkpoint(open_existing(run), None)
    subject = load_subject(run, cfg, info)
    p = cfg.compress.prune
    model = subject.model
    make_plan(model, p.method, p.sparsity, p.exclude, p.scope, subject.calibrate).apply(model)
    if cfg.compress.quantize != "none":
        names = list(quantizable(model, cfg.compress.quantize, cfg.compress.keep_fp32))
        quantize_layers(model, cfg.compress.quantize, names)
    return model.eval(), subject


def greedy(model, tokenizer, prompt: str, n: int) -> str:
    idx = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long)
    return tokenizer.decode(model.generate(idx, n, 0.0)[0].tolist())


@pytest.mark.slow
def test_wanda_int8_gpt_reloads_in_a_fresh_process_with_the_same_outputs(gpt_run, workdir):
    settings = ["compress.prune.method=wanda", "compress.quantize=int8_dynamic"]
    out = compress(gpt_run, *settings, "compress.eval_windows=2")
    assert out == gpt_run / "compressed" / "wanda50+int8_dynamic"
    original, row = json.loads((out / "compression.json").read_text())["rows"]
    assert row["sparsity"] == pytest.approx(0.5) and row["quantized_layers"] == 4
    assert row["nonzero_params"] < original["nonzero_params"] == original["params"]
    assert row["file_mb"] < original["file_mb"] / 2 and row["weights_mb"] < original["weights_mb"]
    for key in ("forward_b1_tokens_per_s", "forward_b8_tokens_per_s", "generate_tokens_per_s"):
        assert row[key] > 0 and original[key] > 0  # measured by fresh processes
    assert (out / "plots" / "compression.png").stat().st_size > 0

    model, _ = in_memory(gpt_run, settings)
    tokenizer = load_run_model(gpt_run).tokenizer
    args = ["--prompt", "The ", "--max-new-tokens", "12", "--temperature", "0"]
    text = genlab("generate", out, *args, cwd=workdir).stdout
    assert text.rstrip("\n") == greedy(model, tokenizer, "The ", 12)
    genlab("eval", out, "--metrics", "perplexity", "--num-samples", "3", cwd=workdir)
    fresh = json.loads((out / "metrics.json").read_text())["eval/val/perplexity"]
    loaded = load_run_model(gpt_run, device="cpu")
    loaded.model = model
    corpus = split_corpus(loaded.cfg.data, loaded.cfg.seed)
    val = DOC_SEPARATOR.join(d.text for d in corpus["val"])
    with torch.no_grad():
        before_saving = likelihood_metrics(loaded, val, "val", 3)["perplexity"].value
    assert fresh == pytest.approx(before_saving, rel=1e-6)
    # The compressed run is not a training run: resuming it is a clear user error.
    with pytest.raises(CheckpointError, match="compressed model"):
        genlab_api.resume(out, ["train.max_steps=100"])


@pytest.mark.slow
def test_lora_gpt_and_hf_models_compress_and_reload_with_the_same_outputs(gpt_run, workdir):
    from hfkit import make_tiny_hf_model

    hf_dir = make_tiny_hf_model(workdir / "tiny-hf", vocab_size=320)
    cases = {  # run overrides, compress settings
        "gpt-lora": (
            [f"finetune.init_from={gpt_run}", "finetune.method=lora", "finetune.lora.rank=2"],
            ["compress.prune.method=structured", "compress.quantize=bf16"],
        ),
        "hf": (
            ["model.family=hf", f"finetune.init_from={hf_dir}"],
            ["compress.prune.method=structured", "compress.quantize=int8_weight_only"],
        ),
    }
    args = ["--prompt", "The ", "--max-new-tokens", "8", "--temperature", "0"]
    for name, (run_overrides, settings) in cases.items():
        run = train(workdir, name, *TINY_TEXT, *run_overrides, "train.max_steps=10")
        out = compress(run, *settings, *QUICK)
        original, row = json.loads((out / "compression.json").read_text())["rows"]
        assert row["params"] < original["params"], name  # heads / MLP neurons removed
        model, _ = in_memory(run, settings)
        tokenizer = load_run_model(run).tokenizer
        text = genlab("generate", out, *args, cwd=workdir).stdout
        assert text.rstrip("\n") == greedy(model, tokenizer, "The ", 8), name


IMAGE_CASES = {
    "vae": (["compress.prune.method=structured", "compress.quantize=int8_dynamic"], "recon_mse"),
    "gan": (["compress.prune.method=magnitude", "compress.quantize=fp16"], "kid"),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(IMAGE_CASES))
def test_image_models_reload_in_a_fresh_process_with_the_same_quality(family, workdir):
    from genlab.evaluation.run_images import image_metrics
    from genlab.image_generation import load_image_run

    settings, metric = IMAGE_CASES[family]
    run = train(workdir, family, *TINY_IMAGES, f"model.family={family}", "train.max_steps=20")
    out = compress(run, *settings, *QUICK)
    genlab("eval", out, "--metrics", metric, "--num-samples", "64", cwd=workdir)
    fresh = json.loads((out / "metrics.json").read_text())[f"eval/val/{metric}"]
    model, subject = in_memory(run, settings)
    source = load_image_run(run).family
    with sampling_from(source, model):
        value = image_metrics(source, subject.cfg, run, "val", [metric], 64)[metric].value
    assert fresh == pytest.approx(value, rel=1e-6)


def _recovery_losses(out: Path) -> list[tuple[int, float]]:
    lines = (out / "recovery" / "round-0" / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["train/loss"]) for r in map(json.loads, lines)]


@pytest.mark.slow
def test_recovery_resumes_exactly_after_kill_9(gpt_run, workdir):
    steps = 30
    settings = ["compress.prune.method=magnitude", f"compress.recover_steps={steps}", *QUICK]
    whole = compress(gpt_run, *settings, out=workdir / "whole")

    killed = workdir / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [GENLAB, "compress", str(gpt_run), *settings, "--out", str(killed)]
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stderr=subprocess.DEVNULL)
    saved = workdir / "killed.partial" / "recovery" / "round-0" / "checkpoints"
    deadline = time.monotonic() + 240
    while not any(saved.glob("step-*/manifest.json")) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not killed.exists(), "the command finished before it could be killed"
    again = genlab("compress", gpt_run, *settings, "--out", killed, cwd=workdir)
    assert "recovery: resuming" in again.stderr
    losses = _recovery_losses(killed)
    assert [s for s, _ in losses] == list(range(1, steps + 1))  # each step once
    assert losses == _recovery_losses(whole)  # exactly the uninterrupted losses
    rows = [json.loads((d / "compression.json").read_text())["rows"][1] for d in (killed, whole)]
    assert rows[0]["val/perplexity"] == rows[1]["val/perplexity"]
    assert not (killed / "recovery" / "round-0" / "checkpoints").exists()  # fp32 copies gone


def test_quality_gate_falls_back_and_reports(gpt_run, workdir):
    settings = ["compress.prune.method=magnitude", "compress.prune.sparsity=0.9", *QUICK]
    limit = 0.02
    out = compress(gpt_run, *settings, f"compress.max_quality_loss={limit}", out=workdir / "gated")
    table = json.loads((out / "compression.json").read_text())
    gate = table["gate"]
    assert gate["passed"] and gate["kept"] and gate["loss"] <= limit
    assert gate["attempts"][0]["loss"] > limit  # the full setting failed first
    sens = gate["sensitivity"]
    assert gate["kept"] == sorted(sens, key=sens.get, reverse=True)[: len(gate["kept"])]
    cfg = load_config(out / "config.yaml")
    kept = [k.split(":", 1)[1] for k in gate["kept"]]
    assert set(kept) <= set(cfg.compress.prune.exclude)  # the result is in its config
    original, row = table["rows"]
    assert row["kept"] == gate["kept"]
    measured = (row["val/perplexity"] - original["val/perplexity"]) / original["val/perplexity"]
    assert measured == pytest.approx(gate["loss"], abs=1e-9)  # reloaded = what was gated
    # A budget no fallback can meet: a one-line user error, and nothing left on disk.
    strict = [*settings, "compress.max_quality_loss=1e-9", "compress.name=strict"]
    with pytest.raises(QualityGateError, match="cannot be met"):
        compress(gpt_run, *strict)
    assert not list((gpt_run / "compressed").glob("strict*"))


def test_a_bf16_run_compresses_to_int8_and_reloads_in_fresh_processes(workdir):
    """train.precision auto picks bf16 on CPUs with bf16 kernels, and a bf16 run is scored
    under bf16 autocast: its int8_dynamic variant (PyTorch's fp32-only kernel) crashed while
    `genlab compress` scored it. The real commands: compress, then eval and generate of the
    result, each in a new process."""
    run = train(workdir, "bf16", *TINY_TEXT, "train.max_steps=10", "train.precision=bf16")
    out = workdir / "bf16-int8"
    genlab("compress", run, "compress.quantize=int8_dynamic", *QUICK, "--out", out, cwd=workdir)
    original, row = json.loads((out / "compression.json").read_text())["rows"]
    assert row["quantized_layers"] == 4
    before, after = original["val/perplexity"], row["val/perplexity"]
    assert np.isfinite(after) and abs(after - before) / before < 0.05  # int8 costs ~0.1-1%
    genlab("eval", out, "--metrics", "perplexity", cwd=workdir)
    assert np.isfinite(json.loads((out / "metrics.json").read_text())["eval/val/perplexity"])
    text = genlab("generate", out, "--prompt", "The ", "--max-new-tokens", "8", cwd=workdir)
    assert text.stdout.startswith("The ")


BAD_INPUT = {
    "unknown method": ["compress.prune.method=lottery"],
    "sparsity 1": ["compress.prune.method=magnitude", "compress.prune.sparsity=1.0"],
    "negative sparsity": ["compress.prune.method=magnitude", "compress.prune.sparsity=-0.1"],
    "not a compress key": ["compress.quantize=int8_dynamic", "model.n_layer=2"],
    "nothing to do": [],
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, gpt_run, workdir):
    before = sorted(gpt_run.rglob("*"))
    proc = genlab("compress", gpt_run, *BAD_INPUT[case], cwd=workdir, ok=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genlab: error:") and len(lines[0]) <= 320
    assert sorted(gpt_run.rglob("*")) == before  # nothing written


@pytest.mark.slow
def test_export_takes_dense_compressed_runs_and_refuses_quantized_or_shrunk_ones(gpt_run, workdir):
    """Unstructured pruning leaves plain tensors of the original shapes: they export (zeros
    kept, parity with genlab). Quantized layers and removed heads have no place in the
    export formats: one line, exit 2, nothing written."""
    from safetensors.torch import load_file

    for settings, what in [
        (["compress.quantize=int8_dynamic"], "quantized layers (int8_dynamic)"),
        (["compress.prune.method=structured"], "structurally pruned"),
    ]:
        out = compress(gpt_run, *settings, *QUICK)
        proc = genlab("export", out, "--format", "hf", cwd=workdir, ok=False)
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and what in lines[0] and len(lines[0]) <= 320, lines
        assert not (out / "export").exists()
    out = compress(gpt_run, "compress.prune.method=magnitude", *QUICK)
    genlab("export", out, "--format", "hf", cwd=workdir)
    record = json.loads((out / "export" / "hf" / "export.json").read_text())
    assert record["parity"]["ok"]
    weights = load_file(str(out / "export" / "hf" / "model.safetensors"))
    fc = weights["transformer.h.0.mlp.c_fc.weight"]
    assert abs((fc == 0).float().mean().item() - 0.5) < 0.01  # the pruned zeros travel


def test_run_without_checkpoints_or_int4_without_kernel_is_a_user_error(gpt_run, workdir):
    bare = workdir / "bare"
    bare.mkdir()
    shutil.copy(gpt_run / "config.yaml", bare / "config.yaml")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        compress(bare, "compress.quantize=int8_dynamic")
    assert sorted(p.name for p in bare.iterdir()) == ["config.yaml"]
    try:
        compress(gpt_run, "compress.quantize=int4_weight_only", *QUICK)
    except ConfigError as exc:
        assert "int4" in str(exc) and "\n" not in str(exc)
    else:
        pytest.skip("this platform has torchao's int4 kernel")
    assert not (gpt_run / "compressed" / "int4_weight_only").exists()


def _zeros_in_saved_weights(run: Path) -> int:
    """Pruned-away weights in a compressed run's saved model file, counted without genlab:
    a pruned matrix is stored as its non-zero values plus a bitmask of where they go, so
    its zeros are the mask's unset bits (the mask's set bits must equal the stored values)."""
    from safetensors.numpy import load_file

    (weights,) = (run / "checkpoints").glob("step-*/model.safetensors")
    tensors = load_file(weights)
    zeros = 0
    for name, mask in tensors.items():
        if name.endswith(".__bitmask"):
            bits = np.unpackbits(mask)
            values = tensors[name.removesuffix(".__bitmask") + ".__values"]
            assert int(bits.sum()) == values.size
            zeros += bits.size - int(bits.sum())
    return zeros


def test_sweep_runs_the_default_grid_once_and_reuses_it(gpt_run, workdir):
    """--sweep: every grid point its own compressed run, one table (the original first) and
    plot; the zeros in each pruned run's saved file scale with the requested sparsity; a
    second sweep reuses every run instead of compressing again."""
    out = workdir / "sweep"
    rows = genlab_api.compress(gpt_run, [*QUICK, "compress.recover_steps=1"], out, sweep=True).rows
    names = [r["name"] for r in rows]
    pruned = [
        f"{m}{s}{r}" for m in ("magnitude", "wanda") for s in (25, 50, 75) for r in ("", "-r1")
    ]
    expected = ["original", "int8_dynamic", "int8_weight_only", *pruned, "structured25"]
    assert names == expected
    table = json.loads((out / "compression.json").read_text())
    assert [r["name"] for r in table["rows"]] == expected
    assert (out / "plots" / "compression.png").stat().st_size > 0
    zeros = {n: _zeros_in_saved_weights(gpt_run / "compressed" / n) for n in pruned}
    for method in ("magnitude", "wanda"):
        z25, z50, z75 = (zeros[f"{method}{s}"] for s in (25, 50, 75))
        assert z50 / z25 == pytest.approx(2, rel=0.02) and z75 / z25 == pytest.approx(3, rel=0.02)
        assert zeros[f"{method}50-r1"] == pytest.approx(z50, rel=0.01)  # the mask stays fixed
    by_name = {r["name"]: r for r in rows}
    assert by_name["structured25"]["params"] < by_name["original"]["params"]  # shapes shrank
    recovered = by_name["magnitude75-r1"]["val/perplexity"]
    assert recovered != by_name["magnitude75"]["val/perplexity"]  # the recovery step ran

    tables = sorted((gpt_run / "compressed").glob("*/compression.json"))
    stamps = {t: t.stat().st_mtime_ns for t in tables}
    again = genlab_api.compress(gpt_run, [*QUICK, "compress.recover_steps=1"], out, sweep=True)
    assert [r["name"] for r in again.rows] == expected
    assert {t: t.stat().st_mtime_ns for t in tables} == stamps  # nothing compressed again
    for first, second in zip(rows[1:], again.rows[1:], strict=True):
        assert first["val/perplexity"] == second["val/perplexity"]
