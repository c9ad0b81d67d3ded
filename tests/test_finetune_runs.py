"""Fine-tuning end to end: pretrain a tiny GPT on the built-in corpus, then adapt it to other
text with each method; and fine-tune a tiny Hugging Face model built from a config."""

import json
import shutil
from pathlib import Path

import pytest
import sklearn
import torch
from safetensors.torch import load_file

from genlab.errors import ConfigError
from genlab.training.loop import resume, train
from testkit import loss_keys, read_metrics, run_cli, tiny_config


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("pre") / "run"
    train(tiny_config("train.max_steps=30", "guard.healthy_after=0"), run)
    return run


@pytest.fixture(scope="module")
def new_text(tmp_path_factory) -> Path:
    """Another corpus that ships with a dependency: scikit-learn's dataset descriptions."""
    out = tmp_path_factory.mktemp("sk")
    for rst in (Path(sklearn.__file__).parent / "datasets" / "descr").glob("*.rst"):
        (out / f"{rst.stem}.txt").write_text(rst.read_text(encoding="utf-8"), encoding="utf-8")
    return out


def finetune(pretrained, new_text, run, *extra):
    cfg = tiny_config(
        f"data.source={new_text}",
        f"finetune.init_from={pretrained}",
        "train.max_steps=20",
        "guard.healthy_after=0",
        *extra,
    )
    return train(cfg, run)


def weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step-{step}" / "model.safetensors"))


def test_full_finetune_reports_gain_and_forgetting(pretrained, new_text, tmp_path):
    result = finetune(pretrained, new_text, tmp_path / "full")
    m = result.final_metrics
    assert m["finetune/gain"] > 0  # the new data's val loss went down
    assert "finetune/forgetting" in m and "val_original/loss" in m
    first = read_metrics(tmp_path / "full")[0]
    assert first["step"] == 0 and first["params/trainable"] == first["params/total"]
    # The pretrained tokenizer is reused: same ids mean the same characters.
    assert (tmp_path / "full" / "tokenizer.json").read_text() == (
        pretrained / "tokenizer.json"
    ).read_text()


def test_frozen_parameters_are_bit_identical(pretrained, new_text, tmp_path):
    run = tmp_path / "freeze"
    finetune(pretrained, new_text, run, "finetune.method=freeze", "finetune.freeze_blocks=1")
    before, after = weights(pretrained, 30), weights(run, 20)
    frozen = [k for k in before if k.startswith(("wte.", "wpe.", "blocks.0."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(before["ln_f.weight"], after["ln_f.weight"])  # the rest trained
    first = read_metrics(run)[0]
    assert first["params/trainable"] < first["params/total"]


def test_lora_trains_only_adapters_and_saves_the_adapter(pretrained, new_text, tmp_path):
    run = tmp_path / "lora"
    finetune(pretrained, new_text, run, "finetune.method=lora", "finetune.lora.rank=4")
    after = weights(run, 20)
    base = weights(pretrained, 30)
    lora_keys = [k for k in after if "lora_" in k]
    assert lora_keys
    for key, value in base.items():  # base weights keep their pretrained values
        name = key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(value, after.get(key, after.get(name)))
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    first = read_metrics(run)[0]
    assert first["params/trainable"] < 0.2 * first["params/total"]
    # generate and eval rebuild the LoRA structure before loading the weights.
    assert run_cli("generate", run, "--prompt", "The ", "--max-new-tokens", "5") == 0
    assert run_cli("eval", run, "--metrics", "perplexity", "--num-samples", "2") == 0
    assert "eval/val/perplexity" in json.loads((run / "metrics.json").read_text())


@pytest.mark.parametrize("method", ["full", "freeze", "lora"])
def test_finetune_resume_is_exact(pretrained, new_text, tmp_path, method):
    extra = [f"finetune.method={method}", "train.checkpoint_every=10", "train.keep_checkpoints=5"]
    if method == "freeze":
        extra.append("finetune.freeze_blocks=1")
    run = tmp_path / "run"
    finetune(pretrained, new_text, run, *extra)
    cut = tmp_path / "cut"
    shutil.copytree(run, cut)
    shutil.rmtree(cut / "checkpoints" / "step-20")
    resume(cut)
    assert loss_keys(read_metrics(cut)) == loss_keys(read_metrics(run))


def test_block_size_longer_than_the_pretrained_context_is_a_clean_error(
    pretrained, new_text, tmp_path
):
    with pytest.raises(ConfigError, match="longer than the pretrained model's context"):
        finetune(pretrained, new_text, tmp_path / "r", "data.block_size=64")


def test_hf_model_finetunes_saves_and_reloads(new_text, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM

    from hfkit import make_tiny_hf_model

    base = make_tiny_hf_model(tmp_path / "tiny-gpt2")
    run = tmp_path / "hf"
    cfg = tiny_config(
        "model.family=hf",
        f"finetune.init_from={base}",
        f"data.source={new_text}",
        "train.max_steps=15",
        "optim.lr=1e-3",
    )
    result = train(cfg, run)
    records = read_metrics(run)
    assert result.final_metrics["finetune/gain"] > 0
    assert records[-1]["train/loss"] < records[1]["train/loss"]
    reloaded = AutoModelForCausalLM.from_pretrained(run / "hf_model", local_files_only=True)
    from genlab.training.lm_model import build_lm_model

    x = torch.randint(0, 100, (1, 8))
    built = build_lm_model(cfg, reloaded.config.vocab_size).model
    from genlab.training import checkpoint as ckpt

    ckpt.load_checkpoint(run / "checkpoints" / "step-15", built)
    with torch.no_grad():
        assert torch.allclose(reloaded(x).logits, built(x), atol=1e-5)
    assert json.loads((run / "metrics.json").read_text())["step"] == 15
