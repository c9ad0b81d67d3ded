"""LoRA via peft on genlab's GPT and a tiny HF GPT-2: only adapters train, merge is exact,
adapters save and load alone."""

from __future__ import annotations

import json

import pytest
import torch
from ftkit import BLOCK, MODEL, VOCAB, batches, snapshot, train_steps

from genlab.config import LoraSection, load
from genlab.errors import CheckpointError, ConfigError
from genlab.finetune import (
    apply_lora,
    count_parameters,
    has_lora,
    load_adapter,
    merge_lora,
    save_adapter,
    trainable_param_groups,
)
from genlab.models.gpt import GPT
from genlab.models.hf import load_hf_causal_lm


def _fresh_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(MODEL, VOCAB, BLOCK)


def _fresh_hf(tiny_hf_dir):
    model = load_hf_causal_lm(tiny_hf_dir)
    return model


def _train_lora(model, vocab: int, steps: int = 4) -> None:
    groups = trainable_param_groups(model, weight_decay=0.1)
    opt = torch.optim.AdamW(groups, lr=3e-2)
    train_steps(model, opt, batches(vocab, steps))
    # Every param the optimizer touched is a LoRA weight.
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("lora_" in names[id(p)] for g in opt.param_groups for p in g["params"])


@pytest.mark.parametrize("family", ["gpt", "hf"])
def test_lora_trains_only_adapters_and_merge_matches(family, tiny_hf_dir):
    model = _fresh_gpt() if family == "gpt" else _fresh_hf(tiny_hf_dir)
    vocab = VOCAB if family == "gpt" else model.vocab_size
    base = snapshot(model)
    apply_lora(model, LoraSection(rank=4, alpha=8, dropout=0.0))
    trainable, total = count_parameters(model)
    assert 0 < trainable < total / 4
    _train_lora(model, vocab)
    # Base weights are bit-identical (peft keeps them under `.base_layer.`).
    after = {k.replace(".base_layer", ""): v for k, v in model.state_dict().items()}
    for k, v in base.items():
        assert torch.equal(v, after[k]), k
    model.eval()
    x = batches(vocab, 1, seed=3)[0][0]
    with torch.no_grad():
        adapted = model(x)
        plain = _fresh_gpt() if family == "gpt" else _fresh_hf(tiny_hf_dir)
        assert (plain.eval()(x) - adapted).abs().max() > 1e-3  # the adapter learned something
        merge_lora(model)
        assert not has_lora(model)
        assert set(model.state_dict()) == set(base)  # a plain model again
        torch.testing.assert_close(model(x), adapted, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["gpt", "hf"])
def test_adapter_save_load_on_fresh_base(family, tiny_hf_dir, tmp_path):
    model = _fresh_gpt() if family == "gpt" else _fresh_hf(tiny_hf_dir)
    vocab = VOCAB if family == "gpt" else model.vocab_size
    apply_lora(model, LoraSection(rank=2, alpha=4))
    _train_lora(model, vocab, steps=2)
    out = save_adapter(model, tmp_path / "adapter")
    files = sorted(p.name for p in out.iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 2 and config["fan_in_fan_out"] is (family == "hf")
    x = batches(vocab, 1, seed=4)[0][0]
    model.eval()
    fresh = _fresh_gpt() if family == "gpt" else _fresh_hf(tiny_hf_dir)
    load_adapter(fresh, out)
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_hf_adapter_is_a_standard_peft_adapter(tiny_hf_dir, tmp_path):
    import peft
    import transformers

    model = _fresh_hf(tiny_hf_dir)
    apply_lora(model, LoraSection(rank=2))
    _train_lora(model, model.vocab_size, steps=2)
    save_adapter(model, tmp_path / "a")
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_hf_dir, local_files_only=True)
    wrapped = peft.PeftModel.from_pretrained(base, tmp_path / "a").eval()
    x = batches(model.vocab_size, 1)[0][0]
    with torch.no_grad():
        torch.testing.assert_close(wrapped(input_ids=x).logits, model.eval()(x))


def test_lora_bad_input_is_one_line(tmp_path):
    lora = ["finetune.init_from=base", "finetune.method=lora"]
    for override in ("finetune.lora.rank=0", "finetune.lora.dropout=1.0"):
        with pytest.raises(ConfigError, match=override.split("=")[0]) as exc:
            load(None, [*lora, override])
        assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="target_modules") as exc:
        apply_lora(_fresh_gpt(), LoraSection(target_modules=["q_proj"]))
    assert "\n" not in str(exc.value)
    with pytest.raises(CheckpointError, match="no LoRA adapter"):
        load_adapter(_fresh_gpt(), tmp_path)
    with pytest.raises(ConfigError, match="no LoRA adapter"):
        merge_lora(_fresh_gpt())
