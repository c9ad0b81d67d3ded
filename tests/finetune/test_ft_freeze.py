"""Transfer learning on genlab's GPT: frozen layers, re-initialised head, discriminative lrs,
layer-wise unfreezing."""

from __future__ import annotations

import pytest
import torch
from ftkit import BLOCK, MODEL, VOCAB, batches, snapshot, train_steps

from genlab.errors import ConfigError
from genlab.finetune import (
    GradualUnfreezer,
    count_parameters,
    freeze_blocks,
    freeze_patterns,
    reinit_head,
    set_scaled_lr,
    trainable_param_groups,
)
from genlab.models.gpt import GPT


def _adamw(model, **kw) -> torch.optim.AdamW:
    groups = trainable_param_groups(model, weight_decay=0.1, **kw)
    opt = torch.optim.AdamW(groups, lr=1e-2)
    set_scaled_lr(opt, 1e-2)
    return opt


def test_frozen_blocks_are_bit_identical_and_have_no_optimizer_state(gpt):
    names = freeze_blocks(gpt, 1)
    assert {"wte.weight", "wpe.weight", "blocks.0.attn.qkv.weight"} <= set(names)
    assert not any(n.startswith("blocks.1.") for n in names)
    before = snapshot(gpt)
    opt = _adamw(gpt)
    train_steps(gpt, opt, batches(VOCAB, 3))
    after = gpt.state_dict()
    frozen = [k for k in before if k.startswith(("wte", "wpe", "blocks.0.", "lm_head"))]
    for k in frozen:  # weight decay would move them too, if they were in the optimizer
        assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["blocks.1.mlp.fc.weight"], after["blocks.1.mlp.fc.weight"])
    in_state = {id(p) for p in opt.state}
    params = dict(gpt.named_parameters())
    assert all(id(params[n]) not in in_state for n in names if n in params)
    in_groups = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not in_groups & {id(params[n]) for n in names if n in params}
    trainable, total = count_parameters(gpt)
    block1 = sum(p.numel() for p in gpt.blocks[1].parameters())
    ln_f = sum(p.numel() for p in gpt.ln_f.parameters())
    assert trainable == block1 + ln_f  # the tied head froze with wte
    assert total == sum(p.numel() for p in gpt.parameters())  # tied matrix counted once


def test_reinit_head_unties_and_trains_while_embeddings_stay(gpt):
    wte_before = gpt.wte.weight.detach().clone()
    head = reinit_head(gpt)
    assert gpt.lm_head is head and gpt.lm_head.weight is not gpt.wte.weight
    assert torch.equal(gpt.wte.weight, wte_before)  # the pretrained embedding is untouched
    freeze_blocks(gpt, MODEL.n_layer)  # train only ln_f and the new head
    head_before = head.weight.detach().clone()
    train_steps(gpt, _adamw(gpt), batches(VOCAB, 2))
    assert torch.equal(gpt.wte.weight, wte_before)
    assert not torch.equal(head.weight, head_before)


def test_freeze_patterns_and_bad_input(gpt):
    names = freeze_patterns(gpt, ["blocks.1.attn.*", "wpe.*"])
    assert "wpe.weight" in names and "blocks.1.attn.qkv.weight" in names
    assert not gpt.blocks[1].attn.qkv.weight.requires_grad
    assert gpt.blocks[1].mlp.fc.weight.requires_grad
    with pytest.raises(ConfigError, match="matches no parameter") as exc:
        freeze_patterns(gpt, ["block.*"])
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="freeze_blocks"):
        freeze_blocks(gpt, 3)


def test_discriminative_lrs_are_ordered_by_depth(gpt):
    opt = _adamw(gpt, lr_decay=0.5)
    by_depth = {}
    for g in opt.param_groups:
        by_depth.setdefault(g["depth"], set()).add(g["lr"])
    # top block and head: depth 0; block 0: depth 1; embeddings: depth n_layer = 2.
    assert by_depth == {0: {1e-2}, 1: {5e-3}, 2: {2.5e-3}}
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lr_of[id(gpt.wte.weight)] < lr_of[id(gpt.blocks[0].mlp.fc.weight)]
    assert lr_of[id(gpt.blocks[0].mlp.fc.weight)] < lr_of[id(gpt.blocks[1].mlp.fc.weight)]
    assert lr_of[id(gpt.blocks[1].mlp.fc.weight)] == lr_of[id(gpt.ln_f.weight)]
    # weight decay placement still comes from train.optim.param_groups
    wd_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert wd_of[id(gpt.blocks[0].mlp.fc.weight)] == 0.1 and wd_of[id(gpt.ln_f.weight)] == 0.0
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="discriminative_lr_decay"):
            trainable_param_groups(gpt, 0.1, lr_decay=bad)


def test_gradual_unfreezing_follows_the_schedule(gpt):
    unfreezer = GradualUnfreezer(gpt, every=2, start=1)
    top, bottom = gpt.blocks[1].mlp.fc.weight, gpt.blocks[0].mlp.fc.weight
    expected = {0: (True, False, False), 1: (True, False, False), 2: (True, True, False)}
    expected |= {3: (True, True, False), 4: (True, True, True), 9: (True, True, True)}
    for step, flags in expected.items():
        unfreezer.apply(step)
        assert (top.requires_grad, bottom.requires_grad, gpt.wte.weight.requires_grad) == flags
        assert gpt.ln_f.weight.requires_grad  # the head side is always trainable
    assert unfreezer.apply(0) and not bottom.requires_grad  # a rollback re-freezes
    with pytest.raises(ConfigError, match="unfreeze_every"):
        GradualUnfreezer(gpt, every=0)


def test_gradual_unfreezing_keeps_permanently_frozen_blocks_frozen():
    torch.manual_seed(0)
    model = GPT(MODEL, VOCAB, BLOCK)
    freeze_blocks(model, 1, embeddings=False)
    unfreezer = GradualUnfreezer(model, every=1, start=0)
    unfreezer.apply(100)
    assert not model.blocks[0].attn.qkv.weight.requires_grad
    assert model.blocks[1].attn.qkv.weight.requires_grad and model.wte.weight.requires_grad


def _unfreezing_run(data, start_state=None, steps=None):
    torch.manual_seed(0)
    model = GPT(MODEL, VOCAB, BLOCK)
    unfreezer = GradualUnfreezer(model, every=2, start=1)
    opt = _adamw(model, lr_decay=0.8, unfreezer=unfreezer)
    if start_state is not None:
        model.load_state_dict(start_state["model"])
        opt.load_state_dict(start_state["optimizer"])
    offset = start_state["step"] if start_state else 0
    train_steps(model, opt, data, before_step=lambda i: unfreezer.apply(offset + i))
    return model, opt


def test_gradual_unfreezing_resumes_exactly_and_creates_state_only_when_thawed():
    data = batches(VOCAB, 6, seed=1)
    # Three steps: block 0 (thaws at step 2) has taken one update, embeddings (step 4) none.
    model, opt = _unfreezing_run(data[:3])
    assert id(model.wte.weight) not in {id(p) for p in opt.state}
    assert id(model.blocks[0].attn.qkv.weight) in {id(p) for p in opt.state}
    state = {"model": snapshot(model), "optimizer": opt.state_dict(), "step": 3}
    resumed, _ = _unfreezing_run(data[3:], start_state=state)
    straight, _ = _unfreezing_run(data)
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
