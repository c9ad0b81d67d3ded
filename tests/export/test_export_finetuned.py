"""Fine-tuned runs: a LoRA run exports merged weights, or its adapter alone that PEFT applies to
the exported base; HF-family runs (full and LoRA) export as hf, onnx and gguf. Loaded without
genlab, each reproduces the genlab model's logits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from exportkit import fresh_python, lm_reference

import genlab
from genlab import config
from genlab.training.loop import train
from testkit import TINY

LOAD = r"""
import json, sys
import numpy as np, torch
from transformers import AutoModelForCausalLM

spec = json.loads(sys.argv[1])
out = {}
for name, item in spec.items():
    model = AutoModelForCausalLM.from_pretrained(item.get("base") or item["dir"])
    if item.get("base"):
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, item["dir"])
    model.eval()
    ref = item["reference"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(ref["windows"])).logits.numpy()
    out[name] = float(np.abs(logits - np.load(ref["logits_file"])).max())
print(json.dumps(out))
"""


def _train(run: Path, *overrides: str) -> Path:
    train(config.load(None, [*TINY, *overrides]), run)
    return run


@pytest.fixture(scope="module")
def finetuned(lm_runs, tmp_path_factory) -> dict[str, Path]:
    from hfkit import make_tiny_hf_model

    root = tmp_path_factory.mktemp("finetuned")
    hf = make_tiny_hf_model(root / "tiny-hf", vocab_size=320)
    lora = ["train.max_steps=6", "finetune.method=lora", "finetune.lora.rank=2"]
    return {
        "base": lm_runs["char"],
        "gpt-lora": _train(root / "gpt-lora", f"finetune.init_from={lm_runs['char']}", *lora),
        "hf-lora": _train(root / "hf-lora", "model.family=hf", f"finetune.init_from={hf}", *lora),
        "tiny-hf": hf,
    }


def test_lora_runs_export_merged_or_adapter_and_load_without_genlab(finetuned, tmp_path):
    base = genlab.export(finetuned["base"], "hf", tmp_path / "base").path
    exports = {}
    for run in ("gpt-lora", "hf-lora"):
        exports[f"{run} merged"] = genlab.export(finetuned[run], "hf", tmp_path / f"{run}-m")
        exports[f"{run} adapter"] = genlab.export(
            finetuned[run], "hf", tmp_path / f"{run}-a", adapter=True
        )
    # The adapter goes onto the base model: the base run exported, or the HF model itself.
    bases = {"gpt-lora adapter": str(base), "hf-lora adapter": str(finetuned["tiny-hf"])}
    refs = {
        run: lm_reference(finetuned[run], tmp_path / run).payload() for run in bases_of(exports)
    }
    spec = {}
    for name, result in exports.items():
        assert result.record["parity"]["ok"], name
        ref = refs[name.split()[0]]
        spec[name] = {"dir": str(result.path), "base": bases.get(name), "reference": ref}
    for name in ("gpt-lora adapter", "hf-lora adapter"):
        files = {f["path"] for f in exports[name].record["files"]}
        assert {"adapter_config.json", "adapter_model.safetensors"} <= files, name
        assert "model.safetensors" not in files  # the adapter alone
    assert "LoRA adapter merged" in " ".join(exports["gpt-lora merged"].record["notes"])
    got = fresh_python(LOAD, spec)
    assert all(diff <= 1e-4 for diff in got.values()), got


def bases_of(exports: dict) -> set[str]:
    return {name.split()[0] for name in exports}


@pytest.mark.slow
def test_hf_family_run_exports_onnx_and_gguf(finetuned, tmp_path):
    onnx = genlab.export(finetuned["hf-lora"], "onnx", tmp_path / "onnx").record["parity"]
    assert onnx["ok"] and set(onnx["max_abs_logit_diff"]) == {"64", "31"}  # the model's context
    gguf = genlab.export(finetuned["hf-lora"], "gguf", tmp_path / "gguf", gguf_type="f32")
    assert gguf.record["parity"]["ok"] and gguf.record["parity"]["max_abs_logit_diff"] <= 1e-4
    assert "LoRA adapter merged into the weights." in gguf.record["notes"]


def test_untied_head_ema_weights_and_an_earlier_checkpoint(lm_runs, tmp_path):
    """A fine-tune with a re-initialised (untied) head and an EMA of its weights, exported from
    an earlier checkpoint: the files hold that checkpoint's EMA tensors, head included."""
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors.torch import load_file

    run = _train(
        tmp_path / "untied",
        "train.max_steps=12",
        f"finetune.init_from={lm_runs['char']}",
        "finetune.reinit_head=true",
        "train.ema_decay=0.9",
    )
    step10 = run / "checkpoints" / "step-10"
    ema = load_file(step10 / "ema.safetensors")
    assert not torch.equal(ema["lm_head.weight"], ema["wte.weight"])

    hf = genlab.export(run, "hf", tmp_path / "hf", checkpoint=step10)
    assert hf.record["run"]["checkpoint"] == {
        "path": "checkpoints/step-10",
        "step": 10,
        "ema_weights": True,
    }
    assert hf.record["parity"]["ok"]
    assert json.loads((hf.path / "config.json").read_text())["tie_word_embeddings"] is False
    saved = load_file(hf.path / "model.safetensors")
    assert torch.equal(saved["lm_head.weight"], ema["lm_head.weight"])
    assert torch.equal(saved["transformer.wte.weight"], ema["wte.weight"])

    gguf = genlab.export(run, "gguf", tmp_path / "gguf", checkpoint=step10, gguf_type="f32")
    assert gguf.record["parity"]["ok"] and gguf.record["parity"]["max_abs_logit_diff"] == 0.0
    tensors = {t.name: t for t in GGUFReader(str(gguf.path / "model-f32.gguf")).tensors}
    head = tensors["output.weight"]
    assert np.array_equal(dequantize(head.data, head.tensor_type), ema["lm_head.weight"].numpy())


def test_gguf_refuses_an_hf_model_that_is_not_gpt2(finetuned, tmp_path):
    import shutil

    import yaml

    from genlab.errors import ConfigError

    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    run = tmp_path / "run"
    shutil.copytree(finetuned["hf-lora"], run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["finetune"]["init_from"] = str(llama)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"'llama' model.*convert_hf_to_gguf"):
        genlab.export(run, "gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()
