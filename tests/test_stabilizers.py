"""Stabilizers users set in the config: each one observably does its job."""

import json

import pytest
import torch
from safetensors.torch import load_file

from genlab.models.gpt import build_gpt
from genlab.training import lm_model
from genlab.training.loop import train
from genlab.training.optim import weight_penalty
from testkit import read_metrics, tiny_config


def test_ema_weights_are_kept_and_used_for_evaluation(tmp_path):
    run = train(tiny_config("train.max_steps=20", "train.ema_decay=0.9"), tmp_path / "r").run_dir
    ckpt = run / "checkpoints" / "step-20"
    raw, ema = load_file(str(ckpt / "model.safetensors")), load_file(str(ckpt / "ema.safetensors"))
    assert raw.keys() == ema.keys()
    assert not all(torch.equal(raw[k], ema[k]) for k in raw)  # the average lags the weights
    # Training is identical to a run without EMA; evaluation uses the averaged weights.
    plain = train(tiny_config("train.max_steps=20"), tmp_path / "p").run_dir
    assert read_metrics(run)[-1]["train/loss"] == read_metrics(plain)[-1]["train/loss"]
    assert read_metrics(run)[-1]["val/loss"] != read_metrics(plain)[-1]["val/loss"]


def test_early_stopping_stops_and_restores_the_best_weights(tmp_path):
    # A learning rate that makes val loss worsen after a while: patience 1 stops quickly.
    cfg = tiny_config(
        "train.max_steps=200",
        "train.eval_every=5",
        "optim.lr=0.05",
        "schedule.warmup_steps=0",
        "schedule.decay=constant",
        "train.early_stopping={patience: 2, min_delta: 0.0}",
        "guard.enabled=false",
    )
    result = train(cfg, tmp_path / "r")
    records = read_metrics(result.run_dir)
    vals = {r["step"]: r["val/loss"] for r in records if "val/loss" in r}
    assert result.step < 200
    best_step = min(vals, key=vals.get)
    assert result.final_metrics["val/loss"] == pytest.approx(vals[best_step], rel=1e-6)
    best = json.loads((result.run_dir / "checkpoints" / "best" / "manifest.json").read_text())
    assert best["step"] == best_step


def test_unknown_early_stopping_metric_is_a_clean_error(tmp_path):
    from genlab.errors import ConfigError

    cfg = tiny_config("train.early_stopping={metric: val/accuracy}")
    with pytest.raises(ConfigError, match=r"val/accuracy.*val/loss"):
        train(cfg, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_z_loss_is_logged_and_shrinks_the_log_partition(tmp_path):
    run = train(tiny_config("train.max_steps=15", "model.z_loss=0.01"), tmp_path / "r").run_dir
    records = read_metrics(run)
    assert all("train/z_loss" in r for r in records)
    assert records[-1]["train/z_loss"] < records[0]["train/z_loss"]


def test_qk_norm_and_init_schemes_reach_the_runs_own_model(tmp_path, monkeypatch):
    built = []  # (model, its weights at initialisation)

    def spy(*args, **kwargs):
        model = build_gpt(*args, **kwargs)
        built.append((model, {k: v.clone() for k, v in model.state_dict().items()}))
        return model

    monkeypatch.setattr(lm_model, "build_gpt", spy)
    cfg = tiny_config(
        "train.max_steps=10",
        "model.qk_norm=true",
        "model.init=xavier",
        "model.scaled_residual=false",
    )
    run = train(cfg, tmp_path / "r").run_dir
    records = read_metrics(run)
    assert records[-1]["train/loss"] < records[0]["train/loss"]
    [(model, init)] = built
    attn = model.blocks[0].attn
    assert attn.q_norm.weight.shape == attn.k_norm.weight.shape == (16,)  # n_embd 32 / 2 heads
    saved = load_file(str(run / "checkpoints" / "step-10" / "model.safetensors"))
    assert {"blocks.0.attn.q_norm.weight", "blocks.0.attn.k_norm.weight"} <= set(saved)
    # Xavier-uniform init of the MLP's first layer (32 -> 128): U(-b, b), b = sqrt(6 / 160).
    fc = init["blocks.0.mlp.fc.weight"]
    bound = (6 / (32 + 128)) ** 0.5
    assert fc.abs().max() <= bound and fc.std() == pytest.approx(bound / 3**0.5, rel=0.1)
    # The trained weights are the run's own: they moved away from that initialisation.
    assert not torch.equal(saved["blocks.0.mlp.fc.weight"], fc)


def test_l1_l2_penalties_only_on_trainable_matrices():
    w = torch.nn.Parameter(torch.full((2, 2), 2.0))
    b = torch.nn.Parameter(torch.ones(2))
    assert weight_penalty([w, b], 0.0, 0.0) is None
    assert weight_penalty([w, b], 0.5, 0.0).item() == pytest.approx(0.5 * 8)
    assert weight_penalty([w, b], 0.0, 0.25).item() == pytest.approx(0.25 * 16)
    w.requires_grad_(False)
    assert weight_penalty([w, b], 1.0, 1.0).item() == 0.0


def test_grad_clip_by_value_caps_every_gradient(tmp_path):
    base = [
        "train.max_steps=5",
        "train.eval_every=5",
        "optim.name=sgd",
        "optim.lr=0.5",
        "schedule.warmup_steps=0",
        "schedule.decay=constant",
    ]
    clipped = train(
        tiny_config(*base, "train.grad_clip=1e-9", "train.grad_clip_mode=value"), tmp_path / "c"
    ).run_dir
    free = train(tiny_config(*base, "train.grad_clip=0"), tmp_path / "f").run_dir
    c, f = read_metrics(clipped), read_metrics(free)
    assert c[0]["train/grad_norm"] == f[0]["train/grad_norm"] > 1e-3  # logged before clipping
    # Every gradient entry capped at 1e-9: the weights barely move, so the loss stays put.
    assert abs(c[-1]["val/loss"] - c[0]["train/loss"]) < 0.05
    assert f[-1]["val/loss"] < c[-1]["val/loss"] - 0.05
