"""From a finetune spec (and a genlab checkpoint) to a model ready to train."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from ftkit import VOCAB, batches
from safetensors.torch import save_model

from genlab import config
from genlab.config import FinetuneConfig, LoraSection
from genlab.errors import CheckpointError, ConfigError
from genlab.finetune import (
    count_parameters,
    load_pretrained_gpt,
    optimizer_groups,
    prepare_model,
    reinit_head,
)
from genlab.models.gpt import GPT
from genlab.training import checkpoint as ckpt

# prepare_model works on the model it is given (the `gpt` fixture); init_from only has to be
# set for the section to validate.
PRETRAINED = "pretrained-run"


def _saved_run(tmp_path, untie: bool = False):
    cfg = config.load(None, ["model.n_layer=2", "model.n_head=2", "model.n_embd=32"])
    torch.manual_seed(0)
    model = GPT(cfg.model, 70, 24)
    if untie:
        reinit_head(model)
    _write_checkpoint(tmp_path / "checkpoints" / "step-5", model, cfg.to_yaml())
    return model


def _write_checkpoint(path, model, config_yaml: str) -> None:
    """A checkpoint as the run-directory contract describes it (weights, state, config, manifest
    with hashes); written by hand so this test does not depend on save_checkpoint's signature."""
    path.mkdir(parents=True)
    save_model(model, str(path / ckpt.WEIGHTS))
    (path / ckpt.CONFIG).write_text(config_yaml, encoding="utf-8")
    torch.save({"step": 5}, path / ckpt.STATE)  # the contract's training state (step at least)
    names = (ckpt.WEIGHTS, ckpt.CONFIG, ckpt.STATE)
    files = {n: hashlib.sha256((path / n).read_bytes()).hexdigest() for n in names}
    manifest = {"step": 5, "healthy": True, "files": files}
    (path / ckpt.MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")


@pytest.mark.parametrize("untie", [False, True])
def test_load_pretrained_gpt_from_a_run(tmp_path, untie):
    original = _saved_run(tmp_path, untie).eval()
    loaded = load_pretrained_gpt(tmp_path).eval()  # the run directory: newest healthy ckpt
    assert loaded.vocab_size == 70 and loaded.block_size == 24
    assert (loaded.lm_head.weight is loaded.wte.weight) is not untie
    x = batches(70, 1)[0][0]
    with torch.no_grad():
        assert torch.equal(loaded(x), original(x))
    again = load_pretrained_gpt(tmp_path / "checkpoints" / "step-5")
    assert torch.equal(again.wpe.weight, loaded.wpe.weight)
    with pytest.raises(CheckpointError, match="init_from") as exc:
        load_pretrained_gpt(tmp_path / "missing")
    assert "\n" not in str(exc.value)


def test_prepare_freeze_with_new_head_lr_decay_and_unfreezing(gpt):
    spec = FinetuneConfig(
        init_from=PRETRAINED,
        method="freeze",
        freeze_blocks=1,
        reinit_head=True,
        discriminative_lr_decay=0.5,
        unfreeze_every=3,
        unfreeze_start=1,
        resize_embeddings=True,
    )
    setup = prepare_model(gpt, spec, data_vocab=60)
    assert setup.resized and gpt.wte.weight.shape[0] == 60 and gpt.lm_head.weight.shape[0] == 60
    assert "blocks.0.mlp.fc.weight" in setup.frozen and "wte.weight" in setup.frozen
    assert gpt.lm_head.weight.requires_grad and not gpt.wte.weight.requires_grad
    assert (setup.trainable, setup.total) == count_parameters(gpt)
    groups = optimizer_groups(gpt, spec, setup, weight_decay=0.1)
    in_groups = {id(p) for g in groups for p in g["params"]}
    # block 0 and the embeddings are frozen for good: the unfreezer never owns them
    assert id(gpt.blocks[0].mlp.fc.weight) not in in_groups
    assert id(gpt.wte.weight) not in in_groups
    setup.unfreezer.apply(100)
    assert not gpt.blocks[0].mlp.fc.weight.requires_grad
    assert gpt.blocks[1].mlp.fc.weight.requires_grad


def test_prepare_lora_keeps_a_new_head_trainable(gpt):
    spec = FinetuneConfig(
        init_from=PRETRAINED, method="lora", reinit_head=True, lora=LoraSection(rank=2)
    )
    setup = prepare_model(gpt, spec, data_vocab=VOCAB)
    names = {n for n, p in gpt.named_parameters() if p.requires_grad}
    assert "lm_head.weight" in names
    assert all("lora_" in n or n == "lm_head.weight" for n in names)
    assert setup.trainable < setup.total / 2


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["finetune.method=full", "finetune.freeze_blocks=1"], "needs finetune.method=freeze"),
        (["finetune.method=lora", "finetune.unfreeze_every=5"], "do not combine"),
        (["finetune.method=tune"], "finetune.method"),
        (["finetune.method=full", "finetune.lora.rank=4"], "apply to method lora only"),
        (["finetune.init_from=null", "finetune.reinit_head=true"], "no effect without"),
    ],
)
def test_contradictions_are_one_line_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match) as exc:
        config.load(None, [f"finetune.init_from={PRETRAINED}", *overrides])
    assert "\n" not in str(exc.value) and len(str(exc.value)) <= 300


def test_prepare_vocab_mismatch_without_resize_is_an_error(gpt):
    with pytest.raises(ConfigError, match="resize_embeddings"):
        prepare_model(gpt, FinetuneConfig(), data_vocab=VOCAB + 10)
