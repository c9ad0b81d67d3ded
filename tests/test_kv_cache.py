"""Decoding with a key/value cache gives what recomputing the whole context gives: the same
logits at every step (to float rounding) and the same tokens, for genlab's GPT and a
Hugging Face model, inside the context window and after it slides."""

from __future__ import annotations

import pytest
import torch

from genlab.config import ModelConfig
from genlab.models.gpt import GPT, sample_tokens


class WholeContext:
    """The model as a plain callable: sample_tokens then recomputes every step's context."""

    def __init__(self, model):
        self.model = model

    def __call__(self, idx):
        return self.model(idx)


def _gpt(block_size=24, **settings):
    torch.manual_seed(0)
    config = ModelConfig(family="gpt", n_layer=2, n_head=2, n_embd=32, **settings)
    return GPT(config, vocab_size=50, block_size=block_size).eval()


@pytest.mark.parametrize("settings", [{}, {"qk_norm": True}])
def test_cached_logits_match_the_whole_context_at_every_step(settings):
    model = _gpt(**settings)
    decode = model.start_decoding()
    seq = torch.randint(0, 50, (3, 4))
    with torch.no_grad():
        got = decode(seq)  # the prompt at once
        assert torch.allclose(got, model(seq), atol=1e-5)
        for width in (1, 1, 3, 1, 2):  # one token, or several after a past
            new = torch.randint(0, 50, (3, width))
            seq = torch.cat([seq, new], dim=1)
            got = decode(new)
            assert got.shape == (3, width, 50)
            assert torch.allclose(got, model(seq)[:, -width:], atol=1e-5)


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_sampling_with_the_cache_gives_the_same_tokens_past_the_window(temperature):
    """40 new tokens with a window of 24: cached while the sequence fits, then the window
    slides and each token is recomputed from its whole context."""
    model = _gpt(block_size=24)
    prompt = torch.randint(0, 50, (2, 3))
    runs = []
    for m in (model, WholeContext(model)):
        g = torch.Generator().manual_seed(7)
        runs.append(sample_tokens(m, prompt, 24, 40, temperature, 10, None, generator=g))
    assert runs[0].shape == (2, 43)
    assert torch.equal(runs[0], runs[1])


def test_a_hugging_face_model_decodes_with_its_own_cache(tmp_path):
    from genlab.models.hf import load_hf_causal_lm
    from hfkit import make_tiny_hf_model

    model = load_hf_causal_lm(make_tiny_hf_model(tmp_path / "hf", n_positions=32)).eval()
    decode = model.start_decoding()
    seq = torch.randint(0, 300, (2, 5))
    with torch.no_grad():
        assert torch.allclose(decode(seq), model(seq), atol=1e-5)
        for _ in range(4):
            new = torch.randint(0, 300, (2, 1))
            seq = torch.cat([seq, new], dim=1)
            assert torch.allclose(decode(new)[:, -1], model(seq)[:, -1], atol=1e-5)
    runs = []
    for m in (model, WholeContext(model)):
        g = torch.Generator().manual_seed(3)
        runs.append(sample_tokens(m, seq[:, :2], 32, 45, 0.8, 20, None, generator=g))
    assert torch.equal(runs[0], runs[1])
