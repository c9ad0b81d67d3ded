"""Scale and memory in one process: gradient accumulation equals one big batch, activation
checkpointing leaves gradients unchanged, the model-state accounting, and strategy/precision
misuse is a clean error. (DDP, FSDP and pipeline runs: test_sharded_strategies.py.)"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genlab.config import ModelConfig
from genlab.models.gpt import GPT
from genlab.training.loop import train
from testkit import TINY, read_metrics, run_cli, tiny_config

# Weights agree to 1e-4, not bitwise: the reductions run in a different order, and Adam
# divides by sqrt(v), so a parameter whose gradient is ~0 turns a 1e-9 difference in its
# gradient into an O(lr) difference in its update (measured: ~2e-5 after 20 steps at lr 3e-3).
WEIGHT_ATOL = 1e-4
STEPS = ["train.max_steps=20", "schedule.decay=constant", "train.sample_every=100"]


def _losses(run_dir: Path) -> list[float]:
    return [r["train/loss"] for r in read_metrics(run_dir)]


def test_grad_accum_splits_the_batch_and_equals_one_big_batch(tmp_path):
    # train.batch_size is the step's batch; grad_accum=2 computes it as 2 micro-batches of 4.
    big = train(tiny_config(*STEPS), tmp_path / "big")
    accum = train(tiny_config(*STEPS, "train.grad_accum=2"), tmp_path / "acc")
    assert _losses(accum.run_dir) == pytest.approx(_losses(big.run_dir), rel=1e-5)
    a = load_file(tmp_path / "acc/checkpoints/step-20/model.safetensors")
    b = load_file(tmp_path / "big/checkpoints/step-20/model.safetensors")
    for name, t in b.items():
        torch.testing.assert_close(a[name], t, rtol=0, atol=WEIGHT_ATOL)
    records = read_metrics(big.run_dir)
    assert all(r["memory/peak_mb"] > 0 for r in records)


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=3, n_head=2, n_embd=32), 50, 16)
    idx = torch.randint(0, 50, (4, 16))
    targets = torch.randint(0, 50, (4, 16))

    def grads(recompute: bool) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        model.activation_checkpointing = recompute
        model.loss(idx, targets).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain, recomputed = grads(False), grads(True)
    for name, g in plain.items():
        torch.testing.assert_close(recomputed[name], g, rtol=0, atol=1e-7)


def test_activation_checkpointing_run_matches_plain_run(tmp_path):
    plain = train(tiny_config("train.max_steps=5"), tmp_path / "a")
    ckpt = train(
        tiny_config("train.max_steps=5", "train.activation_checkpointing=true"), tmp_path / "b"
    )
    assert _losses(ckpt.run_dir) == pytest.approx(_losses(plain.run_dir), rel=1e-6)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.strategy=ddp", "torchrun --nproc-per-node"),
        ("train.strategy=fsdp", "train.strategy=none"),
        ("train.precision=fp16", "train.precision=bf16"),
    ],
)
def test_misuse_is_a_one_line_config_error(tmp_path, capsys, override, needle):
    if override.endswith("fp16") and torch.cuda.is_available():
        pytest.skip("fp16 is allowed on a GPU")
    code = run_cli("train", "examples/lm.yaml", *TINY, override, "--run-dir", tmp_path / "r")
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing written


def test_fp16_overflow_is_skipped_by_the_scaler_and_reported():
    # The scaler's logic runs on CPU too (configs refuse fp16 there: no fp16 speed to gain).
    from genlab.training.memory import LossScaler

    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = LossScaler("cpu")
    loss = model(torch.ones(2, 4)).sum()
    scaler.scale(loss).backward()
    model.weight.grad[0, 0] = float("inf")  # what an fp16 overflow leaves behind
    scaler.unscale_grads(opt)
    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
    assert scaler.overflowed(loss.item(), norm)
    assert not scaler.overflowed(float("nan"), norm)  # a NaN loss is the guard's business
    before = model.weight.detach().clone()
    scaler.step(opt)
    scaler.update()
    assert torch.equal(model.weight, before)  # skipped
    assert scaler.metrics(True) == {"fp16_skipped": 1, "fp16_scale": 65536.0}
    assert scaler.scaler.get_scale() == 32768.0  # the factor halves


@pytest.mark.parametrize("fault", ["nan_loss", "loss_spike"])
def test_fp16_loss_scaling_survives_a_step_the_guard_skips(tmp_path, monkeypatch, fault):
    # fp16 runs only on a GPU; the loop's scaler calls are the same with torch's GradScaler on
    # the CPU. A skipped step had unscaled its gradients without a scaler update, so the
    # next step's unscale_ raised ("unscale_() has already been called ...").
    from genlab.training import loop
    from genlab.training.memory import LossScaler

    monkeypatch.setattr(loop, "make_scaler", lambda precision, device: LossScaler("cpu"))
    inject = f"guard.inject=[{{step: 25, kind: {fault}}}]"
    run = train(tiny_config("train.max_steps=30", inject), tmp_path / "r").run_dir
    records = read_metrics(run)
    assert [r["step"] for r in records] == list(range(1, 31))
    assert records[24]["guard/skipped_steps"] == 1
    assert math.isfinite(records[25]["train/loss"])  # the step after the skip trained
    # The skipped step counts for the scaler like any other: NaN gradients halve its factor,
    # finite ones (a spike) leave it.
    scale = [r["train/fp16_scale"] for r in records]
    assert scale[25] == (scale[24] / 2 if fault == "nan_loss" else scale[24])


def test_model_state_mb_counts_parameters_gradients_and_optimizer_state():
    from genlab.training.memory import model_state_mb

    layer = torch.nn.Linear(256, 256)  # 65,792 fp32 parameters
    frozen = torch.nn.Parameter(torch.zeros(1024), requires_grad=False)  # no grad, no state
    opt = torch.optim.AdamW(layer.parameters())
    params = [*layer.parameters(), frozen]
    mb = 2**20
    assert model_state_mb(params, [opt]) == pytest.approx((65_792 * 4 * 2 + 4096) / mb)
    layer(torch.ones(1, 256)).sum().backward()
    opt.step()  # Adam's exp_avg and exp_avg_sq (+ a scalar step each)
    expected = (65_792 * 4 * 4 + 4096 + 2 * 4) / mb
    assert model_state_mb(params, [opt]) == pytest.approx(expected)
