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
        genlab("export", run, "--format", "onnx", cwd=workdir)
        assert json.loads((run / "export/onnx/export.json").read_text())["parity"]["ok"]


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
    """`genlab tune` through the real command: a 2-trial random study on the tiny text model
    (trials, summary, trials.csv, best.yaml), then best.yaml trains as a config of its own."""
    import csv

    import yaml

    space = {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}
    tune = {"method": "random", "n_trials": 2, "space": space}
    (workdir / "tune.yaml").write_text(yaml.safe_dump({"name": "fresh-tune", "tune": tune}))
    study = workdir / "study"
    out = genlab("tune", "tune.yaml", *TINY_TEXT, "train.max_steps=6", "--study-dir", study,
                 cwd=workdir)  # fmt: skip
    assert "2 complete, 0 pruned, 0 failed" in out.stdout and "study fresh-tune" in out.stdout
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


# task classify: the same chain for classifiers (train → resume → eval on test → predict), on
# the built-in labelled stdlib-topics set (text backbones) and digits (an image encoder).
TINY_CLASSIFY = ["task=classify", "data.dedup.near=false", "train.max_steps=6"]
CLASSIFY_ROWS = {
    "gpt-freeze": ["data.source=stdlib-topics", "finetune.method=freeze",
                   "finetune.freeze_blocks=1"],
    "hf-lora": ["data.source=stdlib-topics", "model.family=hf", "finetune.method=lora",
                "finetune.lora.rank=2", "classify.pooling=last"],
    "digits-vae": ["model.family=vae", "classify.head=mlp", "classify.head_hidden=16"],
}  # fmt: skip


@pytest.mark.parametrize("row", list(CLASSIFY_ROWS))
def test_classify_paths_work_in_a_fresh_process(row, workdir, request):
    text = row != "digits-vae"
    overrides = [*(TINY_TEXT if text else TINY_IMAGES), *TINY_CLASSIFY, *CLASSIFY_ROWS[row]]
    if row == "gpt-freeze":
        overrides.append(f"finetune.init_from={request.getfixturevalue('base_gpt')}")
    elif row == "hf-lora":
        overrides.append(f"finetune.init_from={request.getfixturevalue('hf_model')}")
    run = workdir / f"classify-{row}"

    genlab("train", "empty.yaml", *overrides, "--run-dir", run, cwd=workdir)
    trained = json.loads((run / "metrics.json").read_text())
    assert trained["step"] == 6 and 0 <= trained["val/f1_macro"] <= trained["val/accuracy"] + 1

    genlab("resume", run, "train.max_steps=8", cwd=workdir)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 8 and steps.count(6) == 1

    genlab("eval", run, "--split", "test", cwd=workdir)
    done = json.loads((run / "metrics.json").read_text())
    classes = json.loads((run / "classes.json").read_text())["classes"]
    assert done["evaluated_step"] == 8 and 0 <= done["eval/test/f1_macro"] <= 1
    assert done["eval/test/confusion_matrix"]["labels"] == classes
    assert f"eval/test/f1/{classes[0]}" in done and (run / "plots" / "confusion.png").is_file()

    if text:
        (workdir / "texts.txt").write_text("Return the square root of x.\nOpen a socket.\n")
        inputs = workdir / "texts.txt"
    else:
        from PIL import Image
        from sklearn.datasets import load_digits

        inputs = workdir / "digits-in"
        inputs.mkdir(exist_ok=True)
        for i, image in enumerate(load_digits().images[:2]):
            Image.fromarray((image * 255 / 16).astype("uint8")).save(inputs / f"{i}.png")
    genlab("predict", run, "--input", inputs, "--output", run / "out.jsonl", cwd=workdir)
    rows = [json.loads(line) for line in (run / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["label"] in classes for r in rows)
    assert all(abs(sum(r["probs"].values()) - 1) < 1e-4 for r in rows)
    if row == "gpt-freeze":  # a classifier does not generate text: one line, exit 2
        refused = genlab("generate", run, cwd=workdir, ok=False)
        assert refused.returncode == 2 and "genlab predict" in refused.stderr


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
