"""The fresh-process matrix: every CLI path of every family through the real `genlab` command,
each step in its own process, as a user runs them (train → resume → eval → generate → eval on
the test split). Nothing here may rely on what the test process imported: a path that works
only because pytest imported some module earlier fails here.

Each new capability adds its step to FAMILIES' chains (compress, export, report, ...)."""

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


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pydoc_data.topics import topics

    root = tmp_path_factory.mktemp("fresh")
    (root / "empty.yaml").write_text("name: fresh\n")
    # ~40 documents of CPython's own docs (one per line-separated block): small enough that
    # preparing and re-splitting it costs little in every fresh process.
    docs = [topics[k].strip() for k in sorted(topics)[:40]]
    (root / "corpus.txt").write_text("\n\n\n".join(docs) + "\n")
    return root


@pytest.fixture(scope="module")
def hf_model(workdir: Path) -> Path:
    """A tiny local GPT-2 and its byte-level BPE tokenizer (test data, built once)."""
    from hfkit import make_tiny_hf_model

    return make_tiny_hf_model(workdir / "tiny-hf", vocab_size=320)


@pytest.fixture(scope="module")
def base_gpt(workdir: Path) -> Path:
    """A genlab GPT run to fine-tune from (trained by the real command too)."""
    run = workdir / "base-gpt"
    genlab("train", "empty.yaml", *TINY_TEXT, "train.max_steps=10", "--run-dir", run, cwd=workdir)
    return run


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


@pytest.mark.parametrize(
    "family", ["char-gpt", "bpe-gpt", "hf-full", "hf-lora", "gpt-lora", "vae", "gan"]
)
def test_every_cli_path_works_in_a_fresh_process(family, workdir, request):
    hf = request.getfixturevalue("hf_model") if family.startswith("hf") else Path("unused")
    base = request.getfixturevalue("base_gpt") if family == "gpt-lora" else Path("unused")
    run = workdir / family
    overrides = family_overrides(family, hf, base)
    is_lm = family not in IMAGE_METRICS

    genlab("train", "empty.yaml", *overrides, "train.max_steps=6", "--run-dir", run, cwd=workdir)
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


def test_image_generate_and_config_show_in_a_fresh_process(workdir):
    """`genlab generate` on image runs writes PNG grids (a VAE also its labelled
    reconstructions), reproducibly by --seed; text options are refused on them; `genlab
    config --show` prints the schema's keys with their meaning."""
    from PIL import Image

    gan, vae = workdir / "gen-gan", workdir / "gen-vae"
    trained = genlab(
        "train", "empty.yaml", *TINY_IMAGES, "model.family=gan", "train.max_steps=4",
        "--run-dir", gan, cwd=workdir,
    )  # fmt: skip
    # The banner counts the networks the optimizers train; the EMA copy is not "frozen".
    trainable, total = re.search(r"\(([\d.]+)M of ([\d.]+)M parameters", trained.stderr).groups()
    assert trainable == total
    first = genlab("generate", gan, "--num-samples", "10", "--seed", "3", "--out", "a.png",
                   cwd=workdir)  # fmt: skip
    genlab("generate", gan, "--num-samples", "10", "--seed", "3", "--out", "b.png", cwd=workdir)
    assert "a.png" in first.stdout
    grid = Image.open(workdir / "a.png")
    assert grid.size == ((4 * 9 + 1) * 8, (3 * 9 + 1) * 8)  # 10 digits: 4 x 3 cells of 8x8, x8
    assert (workdir / "a.png").read_bytes() == (workdir / "b.png").read_bytes()
    refused = genlab("generate", gan, "--prompt", "The ", cwd=workdir, ok=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "--prompt does not apply to a gan run" in refused.stderr

    genlab("train", "empty.yaml", *TINY_IMAGES, "model.family=vae", "train.max_steps=4",
           "--run-dir", vae, cwd=workdir)  # fmt: skip
    genlab("generate", vae, "--num-samples", "4", cwd=workdir)
    samples = vae / "samples" / "generated-step-4-seed-0.png"
    recon = vae / "samples" / "generated-step-4-seed-0-recon.png"
    assert Image.open(samples).size == ((2 * 9 + 1) * 8, (2 * 9 + 1) * 8)
    assert Image.open(recon).height == 4 * (9 * 8) + 8  # 16 held-out images: 2 pairs of rows

    shown = genlab("config", "--show", "train", cwd=workdir)
    assert re.search(r"^train\.max_steps = 1000 +int, > 0  — iterations to train", shown.stdout,
                     re.MULTILINE)  # fmt: skip
    assert "optim.lr" not in shown.stdout
    unknown = genlab("config", "--show", "trian", cwd=workdir, ok=False)
    assert unknown.returncode == 2 and "did you mean 'train'" in unknown.stderr
