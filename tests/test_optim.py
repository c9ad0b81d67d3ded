"""Optimizers: the fused kernel genlab picks computes what torch's default per-tensor loop
computes, and optimizer state moves between fused and unfused optimizers."""

import pytest
import torch

from genlab.training import optim
from genlab.training.optim import build_optimizer, kernel_choice
from testkit import tiny_config


def _model_and_grads(seed: int) -> tuple[torch.nn.Module, list[list[torch.Tensor]]]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32))
    grads = [[torch.randn_like(p) for p in model.parameters()] for _ in range(5)]
    return model, grads


def _train(model, optimizer, grads) -> None:
    for step in grads:
        for p, g in zip(model.parameters(), step, strict=True):
            p.grad = g.clone()
        optimizer.step()


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_the_fused_kernel_matches_torchs_per_tensor_loop(name):
    cfg = tiny_config(f"optim.name={name}", "optim.weight_decay=0.1", "optim.momentum=0.9")
    ours, grads = _model_and_grads(0)
    reference, _ = _model_and_grads(0)
    opt = build_optimizer(ours, cfg.optim)
    assert all(g["fused"] for g in opt.param_groups)  # CPU tensors: the fused kernel
    # The reference: torch's class with the same groups, written out here, default kernel
    # (on CPU: one tensor at a time).
    o = cfg.optim
    decay = [p for p in reference.parameters() if p.dim() >= 2]
    rest = [p for p in reference.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": o.weight_decay},
        {"params": rest, "weight_decay": 0},
    ]
    if name == "sgd":
        ref = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, foreach=False)
    else:
        cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        ref = cls(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, foreach=False)
    _train(ours, opt, grads)
    _train(reference, ref, grads)
    for a, b in zip(ours.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_optimizer_state_moves_between_fused_and_unfused_optimizers(monkeypatch):
    cfg = tiny_config()
    model, grads = _model_and_grads(1)
    fused = build_optimizer(model, cfg.optim)
    _train(model, fused, grads[:3])
    saved = fused.state_dict()
    with monkeypatch.context() as m:  # torch's default kernel, as for sharded parameters
        m.setattr(optim, "kernel_choice", lambda params: {})
        plain = build_optimizer(model, cfg.optim)
    plain.load_state_dict(saved)  # a fused run's checkpoint
    assert saved["param_groups"][0]["fused"] is True  # the caller's copy is left alone
    assert not plain.param_groups[0]["fused"]
    assert torch.equal(
        plain.state[model[0].weight]["exp_avg"], fused.state[model[0].weight]["exp_avg"]
    )
    _train(model, plain, grads[3:4])
    back = build_optimizer(model, cfg.optim)
    back.load_state_dict(plain.state_dict())  # an unfused run's checkpoint
    assert all(g["fused"] for g in back.param_groups)
    _train(model, back, grads[4:])  # the fused kernel runs on the loaded state
    assert back.state[model[0].weight]["step"].item() == 5


def test_sharded_or_integer_tensors_keep_torchs_default_kernel():
    assert kernel_choice([torch.nn.Parameter(torch.zeros(2))]) == {"fused": True}
    assert kernel_choice([torch.zeros(2, dtype=torch.int64)]) == {}
    assert kernel_choice([]) == {}
