"""`--format hf`: plain transformers, in a process that never imports genlab, loads the export
of a char, a byte and a BPE run and reproduces genlab's logits, tokenization and greedy text;
the README's pipeline snippet runs on an export as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from exportkit import fresh_python, lm_reference

import genlab
from genlab.evaluation.run import load_run_model

LOAD_AND_COMPARE = r"""
import json, sys
import numpy as np, torch
from transformers import AutoModelForCausalLM, AutoTokenizer

spec = json.loads(sys.argv[1])
ODD = "x\u2603\u00e9\u00a0 \U0001f600\ty"  # characters a small corpus never saw
result = {}
for name, item in spec.items():
    model = AutoModelForCausalLM.from_pretrained(item["dir"]).eval()
    tok = AutoTokenizer.from_pretrained(item["dir"])
    ref = item["reference"]
    with torch.no_grad():
        logits = model(torch.tensor(ref["windows"])).logits.numpy()
    ids = [tok(p)["input_ids"] for p in ref["prompts"]]
    n = model.config.n_positions
    texts = []
    for prompt in ids:  # greedy, the context cut to the model's last n positions
        seq = list(prompt)
        for _ in range(64):
            with torch.no_grad():
                seq.append(int(model(torch.tensor([seq[-n:]])).logits[0, -1].argmax()))
        texts.append(tok.decode(seq[len(prompt):]))
    first = torch.tensor([ids[0]])
    room = n - len(ids[0])
    gen = model.generate(first, max_new_tokens=room, min_new_tokens=room, do_sample=False)
    result[name] = {
        "max_diff": float(np.abs(logits - np.load(ref["logits_file"])).max()),
        "prompt_ids": ids,
        "texts": texts,
        "generate_text": tok.decode(gen[0, len(ids[0]):]),
        "roundtrip": tok.decode(tok(spec[name]["reference"]["prompts"][1])["input_ids"]),
        "odd_ids": tok(ODD)["input_ids"],
        "odd_text": tok.decode(tok(ODD)["input_ids"], skip_special_tokens=True),
        "activation": model.config.activation_function,
        "eos": tok.eos_token,
        "class": type(tok).__name__,
    }
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def exports(lm_runs, tmp_path_factory) -> dict:
    """Each tokenizer kind's run exported once for the module."""
    root = tmp_path_factory.mktemp("hf-exports")
    return {kind: genlab.export(run, "hf", root / kind) for kind, run in lm_runs.items()}


@pytest.fixture(scope="module")
def elsewhere(lm_runs, exports, tmp_path_factory) -> dict:
    """One fresh interpreter (no genlab) loads every export and runs the README's snippet."""
    root = tmp_path_factory.mktemp("references")
    spec = {}
    for kind, run in lm_runs.items():
        ref = lm_reference(run, root / kind)
        spec[kind] = {"dir": str(exports[kind].path), "reference": ref.payload()}
    snippet = _readme_snippet()
    readme = ["texts = {}"]
    for kind in ("char", "bpe"):  # no end-of-text token, and one
        readme += [snippet.replace("runs/lm/export/hf", str(exports[kind].path))]
        readme += [f"texts[{kind!r}] = text"]
    script = LOAD_AND_COMPARE.replace("print(json.dumps(result))", "\n".join(readme))
    script += "\nprint(json.dumps({'compare': result, 'readme': texts}))\n"
    return {"spec": spec, **fresh_python(script, spec), "snippet": snippet}


def test_hf_export_is_exact_without_genlab_for_every_tokenizer(lm_runs, exports, elsewhere):
    spec, got = elsewhere["spec"], elsewhere["compare"]
    for kind in lm_runs:
        ref, out = spec[kind]["reference"], got[kind]
        assert out["max_diff"] <= 1e-4, kind
        assert out["prompt_ids"] == ref["prompt_ids"], kind
        assert out["texts"] == ref["greedy_texts"], kind
        # generate() with its KV cache: the same greedy text, as far as the context goes.
        assert ref["greedy_texts"][0].startswith(out["generate_text"]) and out["generate_text"]
        assert out["roundtrip"] == ref["prompts"][1]
        tokenizer = load_run_model(lm_runs[kind], device="cpu").tokenizer
        odd = "x\u2603\u00e9\u00a0 \U0001f600\ty"
        assert out["odd_ids"] == tokenizer.encode(odd), kind  # unknown characters too
        assert out["odd_text"] == tokenizer.decode(tokenizer.encode(odd)), kind
        assert out["activation"] == "gelu"  # the exact GELU genlab trains with
        assert out["eos"] == ("<|endoftext|>" if kind == "bpe" else None)
        assert out["class"] in ("PreTrainedTokenizerFast", "TokenizersBackend")
        parity = exports[kind].record["parity"]
        assert parity["ok"] and parity["max_abs_logit_diff"] <= 1e-4
        assert parity["greedy"]["identical"] and parity["tokenizer"]["identical_ids"]


def test_export_record_lists_every_file_with_its_hash(lm_runs, exports):
    import hashlib

    result = exports["char"]
    record = json.loads((result.path / "export.json").read_text())
    assert record == result.record
    listed = {f["path"]: f for f in record["files"]}
    on_disk = {p.name for p in result.path.iterdir()} - {"export.json"}
    assert set(listed) == on_disk
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
    } <= on_disk
    for name, entry in listed.items():
        data = (result.path / name).read_bytes()
        assert entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["run"]["checkpoint"]["step"] == 30
    card = (result.path / "README.md").read_text()
    metrics = json.loads((lm_runs["char"] / "metrics.json").read_text())
    loss = next(v for k, v in metrics.items() if k.endswith("val/loss"))
    assert f"{loss:.4g}" in card  # the run's own evaluation numbers
    assert "python-docs" in card and "pipeline(" in card
    assert not list(result.path.parent.glob(".char.tmp-*"))  # the staging directory is gone


def _readme_snippet() -> str:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("## Export") :]
    return next(b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "pipeline(" in b)


def test_readme_pipeline_snippet_runs_on_exports(lm_runs, elsewhere):
    assert 'pipeline("text-generation"' in elsewhere["snippet"]
    assert "runs/lm/export/hf" in elsewhere["snippet"]
    # Greedy through transformers' pipeline == `genlab generate --temperature 0`.
    for kind, text in elsewhere["readme"].items():
        assert text == genlab.generate(lm_runs[kind], "The ", 20, temperature=0.0), kind
        assert text.startswith("The ") and len(text) > 4
    assert set(elsewhere["readme"]) == {"char", "bpe"}
