"""`--format gguf`: gguf's reader (and transformers' GGUF loader), in a process that never
imports genlab, finds llama.cpp's GPT-2 layout with genlab's weights and vocabulary; F16 and
Q8_0 meet their goals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from exportkit import fresh_python, lm_reference

import genlab
from genlab.evaluation.run import load_run_model

READ_BACK = r"""
import json, sys
import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

spec = json.loads(sys.argv[1])
out = {}
for name, item in spec.items():
    reader = GGUFReader(item["file"])
    fields = {k: f.contents() for k, f in reader.fields.items()}
    expected = np.load(item["weights"])
    tensors, worst = {}, 0.0
    for t in reader.tensors:
        data = dequantize(t.data, t.tensor_type)
        tensors[t.name] = [t.tensor_type.name, list(data.shape)]
        worst = max(worst, float(np.abs(data - expected[t.name]).max()))
    out[name] = {
        "architecture": fields["general.architecture"],
        "hp": [fields[f"gpt2.{k}"] for k in ("block_count", "context_length", "embedding_length",
                                             "attention.head_count")],
        "tokenizer": fields["tokenizer.ggml.model"],
        "tokens": fields["tokenizer.ggml.tokens"],
        "merges": fields.get("tokenizer.ggml.merges"),
        "eos": fields.get("tokenizer.ggml.eos_token_id"),
        "tensors": tensors,
        "max_weight_diff": worst,
    }
print(json.dumps(out))
"""

THROUGH_TRANSFORMERS = r"""
import json, os, sys
import numpy as np, torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

spec = json.loads(sys.argv[1])
out = {}
for name, item in spec.items():
    folder, file = os.path.split(item["file"])
    config = AutoConfig.from_pretrained(folder, gguf_file=file)
    config.n_positions = config.n_ctx  # transformers reads gpt2.context_length as n_ctx only
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, config=config).eval()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    ref = item["reference"]
    with torch.no_grad():
        logits = model(torch.tensor(ref["windows"])).logits.numpy()
    out[name] = {
        "max_diff": float(np.abs(logits - np.load(ref["logits_file"])).max()),
        "prompt_ids": [tok(p, add_special_tokens=False)["input_ids"] for p in ref["prompts"]],
    }
print(json.dumps(out))
"""


def _expected_weights(run, path) -> None:
    """genlab's weights under llama.cpp's GPT-2 names, spelled out here independently of the
    exporter's own table."""
    model = load_run_model(run, device="cpu").model
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    names = {
        "token_embd.weight": "wte.weight",
        "position_embd.weight": "wpe.weight",
        "output_norm.weight": "ln_f.weight",
        "output_norm.bias": "ln_f.bias",
    }
    parts = {
        "attn_norm": "ln1",
        "attn_qkv": "attn.qkv",
        "attn_output": "attn.proj",
        "ffn_norm": "ln2",
        "ffn_up": "mlp.fc",
        "ffn_down": "mlp.proj",
    }
    for i in range(len(model.blocks)):
        for new, old in parts.items():
            for p in ("weight", "bias"):
                names[f"blk.{i}.{new}.{p}"] = f"blocks.{i}.{old}.{p}"
    np.savez(path, **{new: sd[old] for new, old in names.items()})


def _expected_tokens(run, kind: str) -> list[str]:
    tok = load_run_model(run, device="cpu").tokenizer
    if kind == "char":
        return ["\u2581" if c == " " else c for c in tok.alphabet]
    if kind == "byte":
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        table = bytes_to_unicode()
        return [table[b] for b in range(256)]
    vocab = json.loads((run / "bpe.json").read_text())["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    return ["<|endoftext|>", *tokens[1:]] if tokens[0] != "<|endoftext|>" else tokens


def test_gguf_f32_reads_back_without_genlab_for_every_tokenizer(lm_runs, tmp_path):
    spec = {}
    for kind, run in lm_runs.items():
        result = genlab.export(run, "gguf", tmp_path / kind, gguf_type="f32")
        assert result.record["parity"]["ok"], kind
        assert result.record["parity"]["max_abs_logit_diff"] == 0.0  # F32: exact
        _expected_weights(run, tmp_path / f"{kind}.npz")
        file = result.path / "model-f32.gguf"
        spec[kind] = {"file": str(file), "weights": str(tmp_path / f"{kind}.npz")}
    got = fresh_python(READ_BACK, spec)
    for kind, run in lm_runs.items():
        out = got[kind]
        assert out["architecture"] == "gpt2"
        assert out["hp"] == [1, 32, 32, 2]
        assert out["tokenizer"] == ("llama" if kind == "char" else "gpt2")
        assert out["tokens"] == _expected_tokens(run, kind)
        assert out["max_weight_diff"] == 0.0
        assert out["tensors"]["token_embd.weight"] == ["F32", [len(out["tokens"]), 32]]
        assert out["tensors"]["blk.0.attn_qkv.weight"] == ["F32", [96, 32]]
        assert "output.weight" not in out["tensors"]  # tied: llama.cpp reuses token_embd
        if kind == "bpe":
            merges = json.loads((run / "bpe.json").read_text())["model"]["merges"]
            assert out["merges"] == [m if isinstance(m, str) else " ".join(m) for m in merges]
            assert out["tokens"][out["eos"]] == "<|endoftext|>"


@pytest.fixture(scope="module")
def quantized(lm_runs, tmp_path_factory) -> dict:
    """The BPE run as F16 and as Q8_0."""
    root = tmp_path_factory.mktemp("gguf")
    return {
        k: genlab.export(lm_runs["bpe"], "gguf", root / k, gguf_type=k) for k in ("f16", "q8_0")
    }


def test_gguf_f16_and_q8_0_meet_their_goals_through_transformers(lm_runs, quantized, tmp_path):
    ref = lm_reference(lm_runs["bpe"], tmp_path / "ref")
    records = {k: r.record for k, r in quantized.items()}
    spec = {
        k: {"file": str(r.path / f"model-{k}.gguf"), "reference": ref.payload()}
        for k, r in quantized.items()
    }
    got = fresh_python(THROUGH_TRANSFORMERS, spec)
    f16, q8 = records["f16"]["parity"], records["q8_0"]["parity"]
    assert f16["ok"] and f16["max_abs_logit_diff"] <= 1e-2
    assert q8["ok"] and q8["perplexity"]["relative_change"] <= 0.005
    # transformers' loader (tanh GELU, as llama.cpp) stays close to genlab too.
    assert got["f16"]["max_diff"] <= 1e-2
    assert got["q8_0"]["max_diff"] <= 0.1
    assert got["f16"]["prompt_ids"] == ref.prompt_ids == got["q8_0"]["prompt_ids"]
    sizes = {
        k: next(f["bytes"] for f in r["files"] if f["path"].endswith(".gguf"))
        for k, r in records.items()
    }
    assert sizes["q8_0"] < sizes["f16"]
    assert q8["transformers"]["tokenizer"]["identical_ids"]


def test_q8_0_blocks_hold_each_value_within_half_a_step(lm_runs, quantized, tmp_path):
    """Q8_0 stores 32 values as int8 times one fp16 scale (max|x| / 127): each value read back
    is within half a step of genlab's (the reader dequantizes; the bound is computed here)."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    result = quantized["q8_0"]
    _expected_weights(lm_runs["bpe"], tmp_path / "w.npz")
    expected = np.load(tmp_path / "w.npz")
    reader = GGUFReader(str(result.path / "model-q8_0.gguf"))
    kinds = {}
    for t in reader.tensors:
        kinds[t.name] = t.tensor_type.name
        got = dequantize(t.data, t.tensor_type)
        want = expected[t.name]
        if t.tensor_type.name != "Q8_0":  # 1-D tensors and the position table stay F32
            assert t.tensor_type.name == "F32" and np.array_equal(got, want), t.name
            continue
        blocks = want.reshape(-1, 32)
        step = np.abs(blocks).max(axis=1, keepdims=True) / 127
        err = np.abs(got.reshape(-1, 32) - blocks)
        assert (err <= step * 0.5 + np.abs(blocks) * 1e-3 + 1e-7).all(), t.name
    assert kinds["token_embd.weight"] == "Q8_0" and kinds["blk.0.ffn_down.weight"] == "Q8_0"
    assert kinds["position_embd.weight"] == "F32" and kinds["blk.0.attn_qkv.bias"] == "F32"
