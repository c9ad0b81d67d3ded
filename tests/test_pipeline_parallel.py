"""Pipeline parallelism: a GPT split over 2 gloo processes (GPipe and 1F1B, 2 and 4
micro-batches) gives the unsplit model's loss and gradients, tied embedding included; training
steps keep the two copies of the tied matrix equal and follow the unsplit model; the full state
dict round-trips."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from genlab.config import ModelConfig
from genlab.models.gpt import GPT
from genlab.training.pipeline import PipelinedGPT, _GPTStage, stage_block_range
from testkit import free_port

# 3 blocks over 2 stages: an uneven split (stage 0 gets blocks 0-1, stage 1 block 2).
MODEL = ModelConfig(n_layer=3, n_head=2, n_embd=32)
VOCAB = 50
B, T, STEPS = 8, 16, 3
# (schedule, micro-batches, activation checkpointing)
GRAD_CASES = [
    ("gpipe", 2, False),
    ("gpipe", 4, False),
    ("1f1b", 2, False),
    ("1f1b", 4, False),
    ("1f1b", 4, True),
]
OPTIMIZERS = ["sgd", "adamw"]
MAX_NORM = 0.5  # small enough that clipping is active


def _ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))


def _model(seed: int = 0, ac: bool = False) -> GPT:
    torch.manual_seed(seed)
    model = GPT(MODEL, VOCAB, 16)
    model.activation_checkpointing = ac
    return model


def _batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randint(0, 50, (B, T), generator=g), torch.randint(0, 50, (B, T), generator=g))
        for _ in range(n)
    ]


def _optimizer(name: str, params) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=0.5, momentum=0.9)
    return torch.optim.AdamW(params, lr=3e-3, weight_decay=0.1)


# -- the 2-process run: one spawn does every case, rank 0 saves the results ----------------


def _gathered_grads(pp: PipelinedGPT) -> dict[str, torch.Tensor]:
    local = {n: p.grad.detach().clone() for n, p in pp.stage_module.named_parameters()}
    parts: list = [None] * pp.world
    dist.all_gather_object(parts, local)
    return {k: v for part in parts for k, v in part.items()}


def _all_ranks(value: float) -> list[float]:
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    cpu, res = torch.device("cpu"), {}
    batches = _batches(STEPS)
    try:
        for sched, mb, ac in GRAD_CASES:
            pp = PipelinedGPT(_model(ac=ac), rank, world, cpu, schedule=sched, microbatches=mb)
            loss = pp.train_step(*batches[0], _ce)
            norm = pp.grad_norm_sq()
            res[sched, mb, ac] = (
                _all_ranks(loss.item()),
                _all_ranks(norm.item()),
                _gathered_grads(pp),
            )

        # Two calls without zeroing accumulate, like two backward() calls.
        pp = PipelinedGPT(_model(), rank, world, cpu, schedule="gpipe", microbatches=2)
        pp.train_step(*batches[0], _ce)
        pp.train_step(*batches[1], _ce)
        res["accumulate"] = _gathered_grads(pp)

        # A new batch shape (fewer rows, shorter T) rebuilds the stages' static shapes.
        pp.stage_module.zero_grad(set_to_none=True)
        x, y = batches[2]
        loss = pp.train_step(x[:4, :8], y[:4, :8], _ce)
        res["reshape"] = (_all_ranks(loss.item()), _gathered_grads(pp))

        for name in OPTIMIZERS:
            pp = PipelinedGPT(_model(), rank, world, cpu, schedule="1f1b", microbatches=2)
            opt = _optimizer(name, pp.stage_module.parameters())
            losses = []
            for x, y in batches:
                opt.zero_grad(set_to_none=True)
                losses.append(pp.train_step(x, y, _ce).item())
                # Global-norm clipping from the all-reduced norm, as clip_grad_norm_ does.
                scale = (MAX_NORM / (pp.grad_norm_sq().sqrt() + 1e-6)).clamp(max=1.0)
                for p in pp.stage_module.parameters():
                    p.grad.mul_(scale)
                opt.step()
            res[name] = (losses, pp.full_state_dict())

        # Round trip into a differently initialised pipeline.
        sd = res["adamw"][1]
        pp = PipelinedGPT(_model(seed=7), rank, world, cpu, schedule="gpipe")
        pp.load_full_state_dict(sd)
        res["roundtrip"] = pp.full_state_dict()
        if rank == 0:
            torch.save(res, out)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def pp_results(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("pp") / "results.pt"
    mp.spawn(_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    return torch.load(out, weights_only=False)


# -- the unsplit reference ------------------------------------------------------------------


def _ref_grads(*batches) -> tuple[float, dict[str, torch.Tensor]]:
    model = _model()
    losses = [model.loss(x, y) for x, y in batches]
    sum(losses).backward()
    return losses[0].item(), {n: p.grad for n, p in model.named_parameters()}


def _check_grads(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> None:
    # named_parameters() lists the tied matrix once, as wte.weight; the pipeline has both copies.
    assert got.keys() == ref.keys() | {"lm_head.weight"}
    for name, g in got.items():
        expect = ref["wte.weight" if name == "lm_head.weight" else name]
        torch.testing.assert_close(g, expect, rtol=0, atol=1e-6, msg=name)


@pytest.mark.multiproc
@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: f"{c[0]}-mb{c[1]}{'-ac' * c[2]}")
def test_loss_and_grads_equal_unsplit_model(pp_results, case):
    losses, norms, grads = pp_results[case]
    ref_loss, ref = _ref_grads(_batches(1)[0])
    assert losses == pytest.approx([ref_loss] * 2, rel=1e-5)  # the same on both ranks
    _check_grads(grads, ref)  # incl. tied wte/lm_head: the sum of both uses, on both copies
    ref_norm = sum(g.pow(2).sum() for g in ref.values()).item()
    assert norms == pytest.approx([ref_norm] * 2, rel=1e-5)


@pytest.mark.multiproc
def test_train_steps_accumulate(pp_results):
    _, ref = _ref_grads(*_batches(2))
    _check_grads(pp_results["accumulate"], ref)


@pytest.mark.multiproc
def test_new_batch_shape(pp_results):
    losses, grads = pp_results["reshape"]
    x, y = _batches(3)[2]
    ref_loss, ref = _ref_grads((x[:4, :8], y[:4, :8]))
    assert losses == pytest.approx([ref_loss] * 2, rel=1e-5)
    _check_grads(grads, ref)


@pytest.mark.multiproc
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_training_follows_unsplit_model(pp_results, name):
    losses, sd = pp_results[name]
    model = _model()
    opt = _optimizer(name, model.parameters())
    ref_losses = []
    for x, y in _batches(STEPS):
        opt.zero_grad(set_to_none=True)
        loss = model.loss(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
        opt.step()
        ref_losses.append(loss.item())
    assert losses == pytest.approx(ref_losses, rel=1e-5)
    # The two copies of the tied matrix, updated on different ranks, stay identical.
    assert torch.equal(sd["wte.weight"], sd["lm_head.weight"])
    ref_sd = model.state_dict()
    assert list(sd) == list(ref_sd)
    for k, v in ref_sd.items():
        torch.testing.assert_close(sd[k], v, rtol=0, atol=1e-5, msg=k)


@pytest.mark.multiproc
def test_full_state_dict_round_trip(pp_results):
    sd, back = pp_results["adamw"][1], pp_results["roundtrip"]
    assert list(back) == list(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    model = _model(seed=7)
    model.load_state_dict(back)  # a plain GPT takes it, tied keys included
    assert model.lm_head.weight is model.wte.weight


# -- no processes -----------------------------------------------------------------------------


def test_block_split_is_consecutive_and_front_loaded():
    assert [list(stage_block_range(5, r, 3)) for r in range(3)] == [[0, 1], [2, 3], [4]]
    assert [list(stage_block_range(4, r, 2)) for r in range(2)] == [[0, 1], [2, 3]]


def test_one_stage_is_the_model_with_micro_batches():
    x, y = _batches(1)[0]
    ref_loss, ref = _ref_grads((x, y))
    pp = PipelinedGPT(_model(), 0, 1, torch.device("cpu"), schedule="1f1b", microbatches=4)
    assert pp.is_first and pp.is_last and isinstance(pp.stage_module, GPT)
    assert pp.train_step(x, y, _ce).item() == pytest.approx(ref_loss, rel=1e-5)
    grads = {n: p.grad for n, p in pp.stage_module.named_parameters()}
    _check_grads({**grads, "lm_head.weight": grads["wte.weight"]}, ref)
    sd = pp.full_state_dict()  # a snapshot, not the live parameters
    assert sd["wte.weight"].data_ptr() != pp.stage_module.wte.weight.data_ptr()
    assert pp.grad_norm_sq().item() == pytest.approx(
        sum(g.pow(2).sum() for g in ref.values()).item(), rel=1e-5
    )


def test_stage_recomputes_blocks_with_activation_checkpointing():
    model = _model(ac=True)
    stage = _GPTStage(model, range(1, 3), first=False, last=True, untie=True)
    calls = []
    # (non-reentrant recomputation stops early, before the block's own forward hook fires)
    stage.blocks["2"].attn.register_forward_hook(lambda *_: calls.append(1))
    stage(torch.randn(2, T, MODEL.n_embd, requires_grad=True)).sum().backward()
    assert len(calls) == 2  # forward + recomputation in backward
    assert list(stage.state_dict())[:2] == ["blocks.1.ln1.weight", "blocks.1.ln1.bias"]
    assert stage.lm_head.weight is not model.wte.weight  # an own copy of the tied matrix
    assert torch.equal(stage.lm_head.weight, model.wte.weight)


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="schedule"):
        PipelinedGPT(_model(), 0, 1, torch.device("cpu"), schedule="zb")
    with pytest.raises(ValueError, match="micro-batches"):
        PipelinedGPT(_model(), 0, 2, torch.device("cpu"), schedule="1f1b", microbatches=1)
    pp = PipelinedGPT(_model(), 0, 1, torch.device("cpu"), microbatches=3)
    with pytest.raises(ValueError, match="split"):
        pp.train_step(*_batches(1)[0], _ce)
