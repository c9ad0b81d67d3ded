"""Local Hugging Face causal LMs behind genlab's GPT interface (offline, tiny GPT-2)."""

from __future__ import annotations

import json

import pytest
import torch
from ftkit import batches, snapshot, train_steps

from genlab.data.tokenizers import Tokenizer, load_tokenizer
from genlab.errors import CheckpointError
from genlab.finetune import freeze_blocks, trainable_param_groups
from genlab.models.hf import (
    HF_MODEL_SUBDIR,
    HFCausalLM,
    load_hf_causal_lm,
    load_hf_tokenizer,
    save_hf_model,
)


def test_missing_or_invalid_dir_is_a_one_line_checkpoint_error(tmp_path):
    cases = [
        (tmp_path / "nope", "does not exist"),
        (tmp_path, "no config.json"),
    ]
    for path, what in cases:
        with pytest.raises(CheckpointError, match=what) as exc:
            load_hf_causal_lm(path)
        assert "\n" not in str(exc.value) and str(path) in str(exc.value)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_hf_causal_lm(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="cannot load") as exc:
        load_hf_causal_lm(tmp_path)
    assert "\n" not in str(exc.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_hf_tokenizer(tmp_path / "nope")


def test_wrapper_matches_the_gpt_interface(tiny_hf_dir):
    model = load_hf_causal_lm(tiny_hf_dir)
    assert isinstance(model, HFCausalLM) and model.block_size == 64
    x, y = batches(model.vocab_size, 1)[0]
    logits = model(x)
    assert logits.shape == (*x.shape, model.vocab_size)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.flatten())
    torch.testing.assert_close(model.loss(x, y), expected)
    model.eval()
    out1 = model.generate(x[:2, :5], 6, 0.8, top_k=20, generator=torch.Generator().manual_seed(1))
    out2 = model.generate(x[:2, :5], 6, 0.8, top_k=20, generator=torch.Generator().manual_seed(1))
    assert out1.shape == (2, 11) and torch.equal(out1, out2) and torch.equal(out1[:, :5], x[:2, :5])
    greedy = model.generate(x[:1, :5], 1, temperature=0)
    assert greedy[0, -1] == model(x[:1, :5])[0, -1].argmax()


def test_finetune_save_pretrained_and_reload(tiny_hf_dir, tmp_path):
    import transformers

    torch.manual_seed(0)
    model = load_hf_causal_lm(tiny_hf_dir)
    opt = torch.optim.AdamW(trainable_param_groups(model, 0.0), lr=1e-2)
    data = batches(model.vocab_size, 1, seed=2) * 15  # one batch, memorised
    losses = train_steps(model, opt, data)
    assert losses[-1] < losses[0] - 1.0
    out = save_hf_model(model, tmp_path / "run")
    assert out == tmp_path / "run" / HF_MODEL_SUBDIR
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    model.eval()
    x = data[0][0]
    with torch.no_grad():
        assert torch.equal(reloaded.eval()(input_ids=x).logits, model(x))


def test_freeze_finds_the_hf_block_list(tiny_hf_dir):
    model = load_hf_causal_lm(tiny_hf_dir)
    names = freeze_blocks(model, 1)
    assert "hf.transformer.wte.weight" in names and "hf.transformer.wpe.weight" in names
    assert any(n.startswith("hf.transformer.h.0.") for n in names)
    assert not any(n.startswith("hf.transformer.h.1.") for n in names)
    before = snapshot(model)
    opt = torch.optim.AdamW(trainable_param_groups(model, 0.1), lr=1e-2)
    train_steps(model, opt, batches(model.vocab_size, 2))
    after = model.state_dict()
    frozen = set(names) | {"hf.lm_head.weight"}  # GPT-2's head is tied to wte
    for k in before:
        assert torch.equal(before[k], after[k]) == (k in frozen), k


def test_tokenizer_adapter_round_trips_and_reloads(tiny_hf_dir, tmp_path):
    tok = load_hf_tokenizer(tiny_hf_dir)
    assert isinstance(tok, Tokenizer) and tok.kind == "hf_pretrained"
    text = "def f(x):\n    return x  # émoji 🙂"
    ids = tok.encode(text)
    assert tok.decode(ids) == text and max(ids) < tok.vocab_size
    tok.save(tmp_path)
    assert json.loads((tmp_path / "tokenizer.json").read_text())["kind"] == "hf_pretrained"
    again = load_tokenizer(tmp_path)
    assert again.encode(text) == ids and again.vocab_size == tok.vocab_size
