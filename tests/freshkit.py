"""What the fresh-process tests share: the real `genlab` command in a new process and the tiny
settings that keep each step to seconds. The matrix itself lives in tests/fresh/ (one module
per group of families, so parallel workers share it out)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

GENLAB = str(Path(sys.executable).with_name("genlab"))
TINY_TEXT = [
    "data.source=corpus.txt",  # a slice of CPython's docs, written by the workdir fixture
    "data.block_size=32",
    "data.split.test=0.1",
    "data.dedup.near=false",
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "train.batch_size=8",
    "train.eval_batches=2",
    "train.eval_every=5",
    "train.checkpoint_every=5",
    "train.sample_every=10",
    "train.sample_tokens=16",
    "train.progress=false",
    "schedule.warmup_steps=2",
    "guard.healthy_after=2",
]
TINY_IMAGES = [
    "data.source=digits",
    "data.split.test=0.1",
    "model.vae.hidden=32",
    "model.vae.latent_dim=4",
    "model.gan.hidden=32",
    "model.gan.z_dim=8",
    "model.vae.arch=mlp",
    "model.gan.arch=mlp",
    "train.batch_size=32",
    "train.eval_batches=2",
    "train.eval_every=5",
    "train.checkpoint_every=5",
    "train.sample_every=10",
    "train.progress=false",
    "schedule.warmup_steps=2",
    "guard.healthy_after=2",
]


def genlab(*args: object, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    """`genlab ARGS` in a new process (one torch thread, offline, a shared data cache)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "GENLAB_CACHE_DIR": str(cwd / "cache"),
    }
    proc = subprocess.run(
        [GENLAB, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    if ok:
        assert proc.returncode == 0, f"genlab {' '.join(map(str, args))}:\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr
    return proc


def family_overrides(family: str, hf_model: Path, base_gpt: Path) -> list[str]:
    return {
        "char-gpt": [*TINY_TEXT],
        "bpe-gpt": [*TINY_TEXT, "data.tokenizer=bpe", "data.vocab_size=300"],
        "hf-full": [*TINY_TEXT, "model.family=hf", f"finetune.init_from={hf_model}"],
        "hf-lora": [
            *TINY_TEXT,
            "model.family=hf",
            f"finetune.init_from={hf_model}",
            "finetune.method=lora",
            "finetune.lora.rank=2",
        ],
        "gpt-lora": [
            *TINY_TEXT,
            f"finetune.init_from={base_gpt}",
            "finetune.method=lora",
            "finetune.lora.rank=2",
        ],
        "vae": [*TINY_IMAGES, "model.family=vae"],
        "gan": [*TINY_IMAGES, "model.family=gan"],
    }[family]


IMAGE_METRICS = {"vae": "recon_mse,extractor_accuracy", "gan": "fid,kid"}


def cli_chain(family: str, workdir: Path, request: pytest.FixtureRequest) -> None:
    """train → resume → eval → generate → eval --split test (LMs), or train → resume → eval on
    val and test → export onnx (images), each step its own `genlab` process."""
    hf = request.getfixturevalue("hf_model") if family.startswith("hf") else Path("unused")
    base = request.getfixturevalue("base_gpt") if family == "gpt-lora" else Path("unused")
    run = workdir / family
    overrides = family_overrides(family, hf, base)
    is_lm = family not in IMAGE_METRICS

    banner = genlab(
        "train", "empty.yaml", *overrides, "train.max_steps=6", "--run-dir", run, cwd=workdir
    ).stderr
    if family == "gan":  # the banner counts the networks the optimizers train, not the EMA copy
        trainable, total = re.search(r"\(([\d.]+)M of ([\d.]+)M parameters", banner).groups()
        assert trainable == total
    trained = json.loads((run / "metrics.json").read_text())
    assert trained["step"] == 6
    if is_lm:
        assert trained["val/tokens"] > 0 and trained["val/bytes"] > 0

    genlab("resume", run, "train.max_steps=10", cwd=workdir)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 10 and steps.count(6) == 1  # the chain continued, nothing replayed

    if is_lm:
        genlab("eval", run, "--num-samples", "4", cwd=workdir)
        done = json.loads((run / "metrics.json").read_text())
        assert done["evaluated_step"] == 10
        assert done["eval/val/perplexity"] > 1 and done["eval/val/bits_per_byte"] > 0
        out = genlab("generate", run, "--prompt", "The ", "--max-new-tokens", "8", cwd=workdir)
        assert out.stdout.startswith("The ") and len(out.stdout) > len("The ")
        genlab(
            "eval", run, "--split", "test", "--metrics", "nll", "--num-samples", "2", cwd=workdir
        )
        assert "eval/test/nll" in json.loads((run / "metrics.json").read_text())
    else:
        metrics = IMAGE_METRICS[family]
        genlab("eval", run, "--metrics", metrics, "--num-samples", "64", cwd=workdir)
        genlab(
            "eval", run, "--split", "test", "--metrics", metrics, "--num-samples", "64", cwd=workdir
        )
        done = json.loads((run / "metrics.json").read_text())
        for name in metrics.split(","):
            assert f"eval/val/{name}" in done and f"eval/test/{name}" in done
        genlab("export", run, "--format", "onnx", cwd=workdir)
        assert json.loads((run / "export/onnx/export.json").read_text())["parity"]["ok"]
