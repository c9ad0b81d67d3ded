"""DDP, FSDP2 and pipeline parallel through `genlab train` under torchrun (2 CPU ranks, gloo):
each matches one process on the whole batch step for step — through a guard skip and a
rollback that must happen on every rank — and their checkpoints resume elsewhere: DDP's and
a sharded FSDP checkpoint on one process, a one-process checkpoint under FSDP, a pipeline
checkpoint under the pipeline (and, with a clean error, not on one process)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genlab.evaluation.run import load_run_model
from testkit import TINY, genlab_process, read_metrics

CFG = [
    "train",
    "examples/lm.yaml",
    *TINY,
    "model.n_layer=2",  # two blocks: two FSDP units / one block per pipeline stage
    "schedule.decay=constant",  # a run stopped at 20 and resumed to 30 is the same run
    "train.sample_every=100",
    # The guard acts on every rank alike: a NaN at step 7 is skipped, the next at 15 rolls
    # every rank back to step 10 (in-memory snapshots of sharded / per-stage state).
    "guard.ladder=[skip, rollback]",
    "guard.inject=[{step: 7, kind: nan_loss}, {step: 15, kind: nan_loss}]",
]
# Adam turns ~1e-9 reduction-order differences in near-zero gradients into O(lr) updates;
# the trajectories agree to 1e-4 (measured ~1e-7 on the losses). Steps 7 and 15 log NaN.
REL = 1e-4


def _ok(*args: str, nproc: int = 1) -> None:
    done = genlab_process(*args, nproc=nproc)
    assert done.returncode == 0, done.stderr[-3000:]


def _losses(run_dir: Path) -> list[float]:
    # (A fine-tuning run's first line, step 0, is the evaluation before training.)
    return [r["train/loss"] for r in read_metrics(run_dir) if r["step"] > 0]


def _events(run_dir: Path) -> list[dict]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    loaded = load_run_model(run_dir, run_dir / f"checkpoints/step-{step}", device="cpu")
    return {k: v.clone() for k, v in loaded.model.state_dict().items()}


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name, t in b.items():
        torch.testing.assert_close(a[name], t, rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One process, global batch 8, 30 steps, checkpoints at 10, 20 and 30."""
    run = tmp_path_factory.mktemp("ref") / "run"
    _ok(*CFG, "train.max_steps=30", "--run-dir", str(run))
    return run


def _guard_acted_once(run_dir: Path) -> None:
    events = _events(run_dir)  # rank 0 alone writes: one event each, not one per rank
    assert [(e["step"], e["action"]) for e in events] == [(7, "skip"), (15, "rollback")]
    assert events[1]["detail"]["rolled_back_to"] == 10


@pytest.mark.multiproc
def test_ddp_matches_one_process_and_resumes_on_one(tmp_path, reference):
    run = tmp_path / "ddp"
    # 2 ranks × 4 windows = the same global batch of 8.
    _ok(*CFG, "train.max_steps=20", "train.strategy=ddp", "--run-dir", str(run), nproc=2)

    ref = _losses(reference)
    assert _losses(run) == pytest.approx(ref[:20], rel=REL, nan_ok=True)
    _guard_acted_once(run)
    # Only rank 0 wrote: one record per step.
    assert [r["step"] for r in read_metrics(run)] == list(range(1, 21))
    mine = load_file(run / "checkpoints/step-20/model.safetensors")
    theirs = load_file(reference / "checkpoints/step-20/model.safetensors")
    _assert_same_weights(mine, theirs)  # unwrapped: no `module.` prefixes

    _ok("resume", str(run), "train.max_steps=30", "train.strategy=none")
    assert _losses(run) == pytest.approx(ref, rel=REL, nan_ok=True)


@pytest.mark.multiproc
def test_fsdp_matches_one_process_and_its_sharded_checkpoint_resumes_on_one(tmp_path, reference):
    run = tmp_path / "fsdp"
    sharded = ["train.strategy=fsdp", "train.checkpoint_format=sharded"]
    _ok(*CFG, "train.max_steps=20", *sharded, "--run-dir", str(run), nproc=2)

    ref = _losses(reference)
    assert _losses(run) == pytest.approx(ref[:20], rel=REL, nan_ok=True)
    _guard_acted_once(run)
    ckpt = run / "checkpoints/step-20"
    assert (ckpt / "sharded/__0_0.distcp").is_file() and (ckpt / "sharded/__1_0.distcp").is_file()
    assert not (ckpt / "model.safetensors").exists()  # no rank gathered the whole model
    assert (run / "samples/step-20.txt").read_text()  # sampling ran through the shards
    # Each rank holds about half of the parameters, gradients and Adam state.
    state_mb = (
        read_metrics(run)[-1]["memory/state_mb"],
        read_metrics(reference)[-1]["memory/state_mb"],
    )
    assert 0.45 < state_mb[0] / state_mb[1] < 0.6
    _assert_same_weights(_weights(run, 20), _weights(reference, 20))

    # One process picks the shards up (weights and Adam state) and continues the same run, as
    # `genlab resume RUN` is written: the strategy that fits one process is chosen, saying so.
    done = genlab_process("resume", str(run), "train.max_steps=30")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming a train.strategy=fsdp run in one process" in done.stderr
    assert _losses(run) == pytest.approx(ref, rel=REL, nan_ok=True)


@pytest.mark.multiproc
def test_a_one_process_checkpoint_resumes_under_fsdp_and_saves_the_same_layout(tmp_path, reference):
    run = tmp_path / "moved"
    shutil.copytree(reference, run)
    shutil.rmtree(run / "checkpoints/step-30")  # resume from step 20
    _ok("resume", str(run), "train.strategy=fsdp", nproc=2)

    assert _losses(run) == pytest.approx(_losses(reference), rel=REL, nan_ok=True)
    # Consolidated: the FSDP ranks' shards gathered into the one-process file layout.
    mine = load_file(run / "checkpoints/step-30/model.safetensors")
    theirs = load_file(reference / "checkpoints/step-30/model.safetensors")
    _assert_same_weights(mine, theirs)


@pytest.mark.multiproc
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_pipeline_matches_one_process_and_resumes_with_its_stages(tmp_path, reference, schedule):
    run = tmp_path / schedule
    pipe = ["train.strategy=pipeline", f"train.pipeline_schedule={schedule}"]
    pipe += ["train.pipeline_microbatches=2"]
    _ok(*CFG, "train.max_steps=20", *pipe, "--run-dir", str(run), nproc=2)

    ref = _losses(reference)
    assert _losses(run) == pytest.approx(ref[:20], rel=REL, nan_ok=True)
    _guard_acted_once(run)
    # The stages' parts make one GPT: eval/generate load it without torchrun.
    _assert_same_weights(_weights(run, 20), _weights(reference, 20))
    if schedule == "gpipe":
        return
    # Optimizer state is kept per stage: one process refuses it with the fix...
    done = genlab_process("resume", str(run), "train.max_steps=30", "train.strategy=none")
    assert done.returncode == 2 and "pipeline stages" in done.stderr
    assert "Traceback" not in done.stderr
    # ...and two stages continue the same run.
    _ok("resume", str(run), "train.max_steps=30", nproc=2)
    assert _losses(run) == pytest.approx(ref, rel=REL, nan_ok=True)


@pytest.mark.multiproc
def test_fsdp_finetunes_a_hugging_face_model_like_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM

    from hfkit import make_tiny_hf_model

    base = make_tiny_hf_model(tmp_path / "tiny-gpt2", dropout=0.0)  # GPT2Block units
    # Fine-tuning with per-layer learning rates: explicit optimizer groups that must follow
    # FSDP's replacement of every parameter.
    hf = [*TINY, "model.family=hf", f"finetune.init_from={base}"]
    hf += ["finetune.discriminative_lr_decay=0.8", "train.max_steps=12", "optim.lr=1e-3"]
    hf += ["schedule.decay=constant"]
    _ok("train", "examples/lm.yaml", *hf, "--run-dir", str(tmp_path / "one"))
    run = tmp_path / "fsdp"
    _ok("train", "examples/lm.yaml", *hf, "train.strategy=fsdp", "--run-dir", str(run), nproc=2)

    assert _losses(run) == pytest.approx(_losses(tmp_path / "one"), rel=REL)
    final = json.loads((run / "metrics.json").read_text())
    assert final["finetune/gain"] > 0
    # The exported HF model holds the gathered weights (tied embedding included).
    reloaded = AutoModelForCausalLM.from_pretrained(run / "hf_model", local_files_only=True)
    mine = _weights(run, 12)
    theirs = {f"hf.{k}": v for k, v in reloaded.state_dict().items()}
    _assert_same_weights({k: mine[k] for k in theirs}, theirs)


@pytest.mark.multiproc
@pytest.mark.parametrize(
    ("example", "extra", "keys"),
    [
        ("digits-vae", [], ["train/loss", "train/kl"]),
        # The GAN with the gradient penalty: the D and G steps through DDP plus a double
        # backward and its own random mixing weights (the other GAN losses differ from it only
        # in the loss function, which DDP never sees).
        ("digits-gan", ["model.gan.loss=wgan-gp"], ["train/d_loss", "train/g_loss"]),
    ],
)
def test_image_families_train_data_parallel_like_one_process(tmp_path, example, extra, keys):
    # Each rank takes its rows of the global batch and of one global noise draw (VAE
    # reparameterization, GAN latents, WGAN-GP mixing weights), so 2 ranks compute what one
    # process does.
    cfg = ["train", f"examples/{example}.yaml", *extra, "train.max_steps=12"]
    cfg += ["train.batch_size=16"]
    cfg += ["train.eval_every=6", "train.checkpoint_every=6", "train.sample_every=12"]
    cfg += ["train.progress=false", "schedule.warmup_steps=3", "schedule.decay=constant"]
    _ok(*cfg, "--run-dir", str(tmp_path / "one"))
    _ok(*cfg, "train.strategy=ddp", "--run-dir", str(tmp_path / "ddp"), nproc=2)

    one, ddp = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "ddp")
    for key in keys:
        assert [r[key] for r in ddp] == pytest.approx([r[key] for r in one], rel=REL)
    assert (tmp_path / "ddp/samples/step-12.png").is_file()
    # The DDP checkpoint resumes on one process.
    _ok("resume", str(tmp_path / "ddp"), "train.max_steps=18", "train.strategy=none")
    assert read_metrics(tmp_path / "ddp")[-1]["step"] == 18


@pytest.mark.multiproc
def test_bad_strategy_settings_are_one_line_from_rank_zero_and_write_nothing(tmp_path):
    run = tmp_path / "run"
    args = (*CFG[:3], "model.n_layer=1", "train.strategy=pipeline", "--run-dir", str(run))
    done = genlab_process(*args, nproc=2, launcher="genlab")
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 2, done.stderr
    assert lines == [
        "genlab: error: train.strategy=pipeline cannot train with model.n_layer=1 blocks over "
        "2 stages; change that setting or use train.strategy=fsdp/ddp"
    ]
    assert not run.exists()
    # A bad config is refused by the launcher itself, before any worker starts.
    bad = genlab_process(*CFG[:3], "optim.lrr=1", "--run-dir", str(run), nproc=2, launcher="genlab")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "unknown key 'optim.lrr'" in bad.stderr and not run.exists()
