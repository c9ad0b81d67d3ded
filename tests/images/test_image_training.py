"""VAE and GAN runs through the one training loop: the run directory they write, exact resume,
the image detectors (mode collapse, posterior collapse, D overpowering) firing on configs built
to trigger them and answered by the guard's ladder, train-only augmentation, and bad image
files skipped and reported. Tiny models (hidden 64, batch 32) keep every run to seconds;
tests/images/conftest.py pins one torch thread, so compared runs share the thread count."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from safetensors.torch import load_file

from genlab import config
from genlab.training.checkpoint import load_state
from genlab.training.image_tasks import ImageBatches
from genlab.training.loop import resume, train

SMALL = [
    "data.source=digits",
    "model.vae.hidden=64",
    "model.gan.hidden=64",
    "train.batch_size=32",
    "train.eval_every=10",
    "train.checkpoint_every=10",
    "train.keep_checkpoints=10",
    "train.sample_every=20",
    "train.progress=false",
    "schedule.warmup_steps=5",
    "optim.lr=2e-3",
    "optim.weight_decay=0",
    "guard.healthy_after=3",
]
QUIET = Console(quiet=True)
# What must be reproducible in each family's metrics (not wall time or throughput).
KEYS = {
    "vae": ("train/loss", "train/grad_norm", "train/lr", "train/kl", "val/elbo"),
    "gan": (
        "train/d_loss",
        "train/g_loss",
        "train/d_grad_norm",
        "train/g_grad_norm",
        "train/g_lr",
        "train/d_acc_fake",
        "val/spread_ratio",
        "val/d_acc_real",
    ),
}


def cfg_of(family: str, *overrides: str) -> config.ExperimentConfig:
    return config.load(None, [*SMALL, f"model.family={family}", *overrides])


def run(family: str, path: Path, *overrides: str) -> Path:
    return train(cfg_of(family, *overrides), path, console=QUIET).run_dir


def records(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def events(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]


def keys_of(family: str, recs: list[dict]) -> list[tuple]:
    return [(r["step"], *(r.get(k) for k in KEYS[family])) for r in recs]


# ----------------------------------------------------------------------------- run directory


def test_vae_run_writes_metrics_grids_scaler_and_checkpoints(tmp_path):
    out = run("vae", tmp_path / "vae", "train.max_steps=30")
    recs = records(out)
    assert [r["step"] for r in recs] == list(range(1, 31))
    assert all(r["train/loss"] > 0 and r["throughput/samples_per_s"] > 0 for r in recs)
    elbo = {r["step"]: r["val/elbo"] for r in recs if "val/elbo" in r}
    assert sorted(elbo) == [10, 20, 30]
    assert elbo[30] > elbo[10]  # it learns: the ELBO (a log-likelihood bound) goes up
    for name in ("step-20.png", "step-30.png", "recon-step-20.png", "recon-step-30.png"):
        with Image.open(out / "samples" / name) as im:
            assert min(im.size) >= 64  # 8x8 cells upscaled, not a degenerate file
    scaler = json.loads((out / "scaler.json").read_text())
    assert scaler  # the fitted scaler resume and generation reuse
    weights = load_file(str(out / "checkpoints" / "step-30" / "model.safetensors"))
    assert any(k.startswith("decoder.") for k in weights)
    assert events(out) == []


def test_gan_run_writes_both_networks_and_the_ema_generator(tmp_path):
    out = run("gan", tmp_path / "gan", "train.max_steps=30")
    recs = records(out)
    for r in recs:
        assert {"train/d_loss", "train/g_loss", "throughput/samples_per_s"} <= r.keys()
    assert [r["step"] for r in recs if "val/spread_ratio" in r] == [10, 20, 30]
    assert (out / "samples" / "step-20.png").is_file()
    assert (out / "samples" / "step-30.png").is_file()
    assert (out / "scaler.json").is_file()
    ck = out / "checkpoints" / "step-30"
    g, ema = (
        load_file(str(ck / "generator.safetensors")),
        load_file(str(ck / "generator_ema.safetensors")),
    )
    assert (ck / "discriminator.safetensors").is_file()
    assert g.keys() == ema.keys()
    # The average trails the generator (not a copy of it) but has moved off its start: the
    # warmed-up decay lets 30 updates count (a fixed 0.999 would keep ~97% of the init).
    assert any(not torch.equal(g[k], ema[k]) for k in g)
    init = load_file(str(out / "checkpoints" / "step-10" / "generator_ema.safetensors"))
    moved = sum((ema[k] - init[k]).norm() for k in ema)
    assert moved > 0.5 * sum((g[k] - init[k]).norm() for k in g)


def test_gan_learning_rates_and_betas_reach_the_two_optimizers(tmp_path):
    """model.gan.lr_d / lr_g / beta1 / beta2 are what D's and G's Adam step with (the saved
    optimizer state is the optimizers' own), not optim.lr / beta1 / beta2."""
    out = run(
        "gan",
        tmp_path / "gan",
        "train.max_steps=10",
        "schedule.warmup_steps=0",
        "schedule.decay=constant",  # the scheduled lr is the base lr at every step
        "model.gan.lr_d=4e-3",
        "model.gan.lr_g=1e-3",
        "model.gan.beta1=0.3",
        "model.gan.beta2=0.9",
    )
    optimizers = load_state(out / "checkpoints" / "step-10")["optimizers"]
    for name, lr in (("discriminator", 4e-3), ("generator", 1e-3)):
        groups = optimizers[name]["param_groups"]
        assert groups and all(g["lr"] == pytest.approx(lr) for g in groups), name
        assert all(tuple(g["betas"]) == (0.3, 0.9) for g in groups), name
        assert optimizers[name]["state"]  # Adam state exists: the optimizer really stepped
    last = records(out)[-1]
    assert (last["train/d_lr"], last["train/g_lr"]) == pytest.approx((4e-3, 1e-3))


# ----------------------------------------------------------------------------- exact resume


@pytest.mark.parametrize("family", ["vae", "gan"])
def test_kill_and_resume_continues_exactly(tmp_path, family):
    full = run(family, tmp_path / "full", "train.max_steps=40")
    # Simulate a run killed after step 34: its newest complete checkpoint is step 20's
    # (step 30's was being written), and the logs ran past it.
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    for step in (30, 40):
        shutil.rmtree(cut / "checkpoints" / f"step-{step}")
    resume(cut, console=QUIET)
    got, ref = records(cut), records(full)
    assert [r["step"] for r in got] == list(range(1, 41))
    assert keys_of(family, got) == keys_of(family, ref)
    names = ["model"] if family == "vae" else ["generator", "discriminator", "generator_ema"]
    for name in names:
        a = load_file(str(full / "checkpoints" / "step-40" / f"{name}.safetensors"))
        b = load_file(str(cut / "checkpoints" / "step-40" / f"{name}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name


# ----------------------------------------------------------------------------- detectors


def test_generator_that_cannot_learn_is_reported_as_mode_collapse(tmp_path):
    # A generator at lr 1e-7 keeps its initial output: nearly the same image for every z
    # (spread ratio ~0.13 against the real digits). Checks allowed from step 20; patience 2.
    out = run(
        "gan",
        tmp_path / "collapsed",
        "train.max_steps=30",
        "model.gan.lr_g=1e-7",
        "guard.collapse.check_after=20",
    )
    [event] = [e for e in events(out) if e["kind"] == "mode_collapse"]
    assert event["step"] == 30  # low at 20 and 30
    assert event["action"] == "lr_cooldown"  # the ladder minus skip: nothing to skip
    assert event["detail"]["updater"] == "generator"
    assert event["detail"]["ratio"] < event["detail"]["threshold"]


@pytest.mark.parametrize(("beta", "collapses"), [(1.0, False), (200.0, True)])
def test_posterior_collapse_fires_on_a_huge_beta_only(tmp_path, beta, collapses):
    # beta 200 with no annealing: the KL term dwarfs the reconstruction, so the encoder
    # gives up on its input and q(z|x) becomes the prior in every dimension.
    out = run(
        "vae",
        tmp_path / f"beta{beta}",
        "train.max_steps=40",
        f"model.vae.beta={beta}",
        "model.vae.kl_anneal=none",
        "guard.collapse.check_after=20",
    )
    found = [e for e in events(out) if e["kind"] == "posterior_collapse"]
    assert bool(found) == collapses, found
    if collapses:
        event = found[0]
        assert event["action"] in ("lr_cooldown", "rollback")
        assert event["detail"]["active_units"] <= 1
        assert event["detail"]["low_kl_dims"] >= 15  # of 16 latent dims


def test_overpowering_discriminator_is_answered_by_the_ladder(tmp_path):
    # G barely moves (lr 1e-7) while D learns fast (lr 1e-2): D soon tells every real from
    # every fake; a 10-step window makes that an event within the run.
    out = run(
        "gan",
        tmp_path / "overpowered",
        "train.max_steps=40",
        "schedule.decay=constant",
        "model.gan.lr_g=1e-7",
        "model.gan.lr_d=1e-2",
        "guard.collapse.d_window=10",
        "guard.cooldown_steps=100",
    )
    found = [e for e in events(out) if e["kind"] == "d_overpowering"]
    assert found, events(out)
    first = found[0]
    assert first["action"] in ("lr_cooldown", "rollback")  # never skip: no step to skip
    assert all(e["action"] != "skip" for e in found)
    assert first["detail"]["updater"] == "discriminator"
    assert first["detail"]["min_accuracy"] >= 0.99
    if first["action"] == "lr_cooldown":  # D's lr really went down after the event
        lr = {r["step"]: r["train/d_lr"] for r in records(out)}
        assert lr[first["step"] + 1] == pytest.approx(0.1 * lr[first["step"] - 1])


# ----------------------------------------------------------------------------- data


def test_augmentation_changes_train_batches_only():
    augment = [
        "data.augment.shift_p=1.0",
        "data.augment.rotate_p=1.0",
        "data.augment.brightness_p=1.0",
    ]
    plain = ImageBatches(cfg_of("vae"), torch.device("cpu"), None, QUIET)
    aug = ImageBatches(cfg_of("vae", *augment), torch.device("cpu"), None, QUIET)
    b_plain, b_aug = plain.next_batch(), aug.next_batch()
    assert b_plain.ids == b_aug.ids  # the same images were drawn...
    assert not torch.allclose(b_plain.x, b_aug.x)  # ...and only the augmented ones changed
    assert torch.equal(plain.val_scaled, aug.val_scaled)  # validation never augmented
    assert plain.scaler.state_dict() == aug.scaler.state_dict()  # fitted on clean train data


def _write_folder(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    root.mkdir()
    for i in range(n):
        pixels = (rng.random((8, 8)) * 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(root / f"img{i:02d}.png")
    (root / "broken.png").write_bytes(b"this is not a PNG file")


def test_corrupt_file_in_an_image_folder_is_skipped_counted_and_reported(tmp_path, capsys):
    folder = tmp_path / "imgs"
    _write_folder(folder, 20)
    out = train(
        cfg_of(
            "vae",
            f"data.source={folder}",
            "data.image_size=8",
            "data.channels=1",
            "data.val_fraction=0.2",
            "train.max_steps=5",
            "train.eval_every=5",
        ),
        tmp_path / "run",
        console=QUIET,
    ).run_dir
    assert [r["step"] for r in records(out)] == [1, 2, 3, 4, 5]  # the run went through
    err = capsys.readouterr().err
    assert "20 images 1x8x8" in err and "(16 train / 4 val)" in err
    assert "skipped 1 unreadable of 21 files" in err and "broken.png" in err
