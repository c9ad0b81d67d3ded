"""Vocabulary mismatch between a pretrained model and the data's tokenizer."""

from __future__ import annotations

import pytest
import torch

from genlab.errors import ConfigError
from genlab.finetune import (
    check_vocab,
    match_vocab,
    model_vocab_size,
    reinit_head,
    resize_gpt_vocab,
)
from genlab.models.hf import load_hf_causal_lm


def test_check_vocab_rules():
    assert check_vocab(100, 100, resize=False) is False
    assert check_vocab(100, 80, resize=False) is False  # smaller data vocab: harmless
    assert check_vocab(100, 80, resize=True) is True
    assert check_vocab(100, 120, resize=True) is True
    with pytest.raises(ConfigError, match="resize_embeddings") as exc:
        check_vocab(100, 120, resize=False)
    assert "120" in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("new", [60, 40])
def test_resize_gpt_vocab_keeps_rows_and_tie(gpt, new):
    old = gpt.wte.weight.detach().clone()
    resize_gpt_vocab(gpt, new)
    keep = min(new, old.shape[0])
    assert gpt.wte.weight.shape == (new, 32) and gpt.vocab_size == new
    assert torch.equal(gpt.wte.weight[:keep], old[:keep])
    assert gpt.lm_head.weight is gpt.wte.weight  # still tied
    assert gpt(torch.tensor([[new - 1, 0]])).shape == (1, 2, new)


def test_resize_untied_gpt_head(gpt):
    head = reinit_head(gpt).weight.detach().clone()
    assert match_vocab(gpt, 55, resize=True)
    assert gpt.lm_head.weight is not gpt.wte.weight
    assert gpt.lm_head.weight.shape == (55, 32) and torch.equal(gpt.lm_head.weight[:50], head)
    with pytest.raises(ConfigError, match="pretrained model only 55"):
        match_vocab(gpt, 70, resize=False)


def test_resize_hf_embeddings(tiny_hf_dir):
    model = load_hf_causal_lm(tiny_hf_dir)
    assert model_vocab_size(model) == 320
    assert not match_vocab(model, 300, resize=False)
    assert match_vocab(model, 333, resize=True)
    assert model_vocab_size(model) == 333 and model.hf.config.vocab_size == 333
    assert model(torch.tensor([[332, 1]])).shape == (1, 2, 333)
