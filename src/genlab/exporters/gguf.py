"""`--format gguf`: one GGUF file for llama.cpp and the tools built on it, in llama.cpp's GPT-2
layout (architecture `gpt2`, tensors `token_embd`, `blk.N.attn_qkv`, ...; gpt2.py), with the
tokenizer embedded (tokenizer.py: byte-level BPE as `gpt2`, char as single-character `llama`).

Tensor types follow llama.cpp's converter: 1-D tensors, biases, norms and the position table
stay F32; the other matrices are F32, F16 or Q8_0 (`--gguf-type`); a matrix whose rows are not
a multiple of Q8_0's 32-value block falls back to F16.

Checked after writing, from the file alone:
- read back with `gguf.GGUFReader`: every tensor's type and bytes, the hyperparameters and the
  vocabulary are what was meant to be written;
- fidelity: a GPT built from the file's metadata and dequantized tensors against the genlab
  model (max |Δlogit|, greedy text, perplexity: the goals);
- where transformers is installed, its own GGUF loader (`from_pretrained(dir, gguf_file=...)`)
  is compared too. It evaluates GPT-2 as llama.cpp does, with the tanh-approximated GELU
  (genlab trains with the exact one), so that number also shows what llama.cpp users get.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genlab.errors import CheckpointError, ConfigError, GenlabError, first_line, require
from genlab.exporters import gpt2
from genlab.exporters.card import write_model_card
from genlab.exporters.job import Exporter, ExportJob
from genlab.exporters.parity import (
    HeldOut,
    all_met,
    goal,
    greedy,
    greedy_report,
    held_out,
    max_abs_logit_diff,
    perplexity,
    quiet_transformers,
    tokenizer_report,
)
from genlab.exporters.tokenizer import GGUFVocab, gguf_vocab

# --gguf-type -> (matrix type, llama.cpp file type), names as in gguf.GGMLQuantizationType /
# gguf.LlamaFileType.
TYPES = {"f32": ("F32", "ALL_F32"), "f16": ("F16", "MOSTLY_F16"), "q8_0": ("Q8_0", "MOSTLY_Q8_0")}
# Goals per type: exact for F32; F16 within 1e-2 of the logits; Q8_0 perplexity within +0.5%.
LOGIT_GOALS = {"f32": 1e-4, "f16": 1e-2}
Q8_0_PERPLEXITY_GOAL = 0.005


def _check(job: ExportJob) -> None:
    require("gguf", "export")
    if job.family == "gpt":
        gpt2.check_gpt2_compatible(job.cfg, "gguf")
    else:  # hf family: only GPT-2 models have this layout
        init_from = job.cfg.finetune.init_from
        model_type = _hf_model_type(init_from)
        if model_type is None:
            raise CheckpointError(
                f"cannot read {str(init_from)[:120]!r}/config.json, the Hugging Face model this "
                "run fine-tunes; run the export where finetune.init_from points at it"
            )
        if model_type != "gpt2":
            raise ConfigError(
                f"--format gguf writes llama.cpp's GPT-2 layout; this run fine-tunes a "
                f"{model_type!r} model; export --format hf and convert that directory with "
                "llama.cpp's convert_hf_to_gguf.py"
            )
    from genlab.data.tokenizers import load_tokenizer

    gguf_vocab(load_tokenizer(job.run.tokenizer_dir))  # a ConfigError for unsupported kinds


def _hf_model_type(init_from: str | None) -> str | None:
    try:
        spec = json.loads((Path(str(init_from)).expanduser() / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return spec.get("model_type") if isinstance(spec, dict) else None


def _write(job: ExportJob, out: Path) -> dict[str, Any]:
    gguf = require("gguf", "export")
    loaded = job.lm()
    model = job.exportable(loaded.model)
    state, n_head, eps = _gpt2_state(job, model)
    vocab = gguf_vocab(loaded.tokenizer)
    kind = job.options.gguf_type or "f16"
    path = out / f"model-{kind}.gguf"
    planned = _planned_tensors(gguf, state, kind)
    _write_file(gguf, path, job.cfg.name, planned, state, n_head, eps, vocab, kind)

    readback, tensors = _read_back(gguf, path, planned, vocab)
    held = held_out(loaded)
    from_file = _file_model(job, model, state, path, tensors)
    parity = _parity(job, from_file, held, kind, path, readback)
    if loaded.tokenizer.kind == "char":
        job.notes.append(
            "The char vocabulary is stored SentencePiece-style (space as U+2581). llama.cpp "
            "cannot tokenize characters missing from it (genlab maps them to id 0, U+FFFD)."
        )
    job.notes.append(
        "llama.cpp computes GPT-2's GELU with the tanh approximation; genlab trained with the "
        "exact GELU (the 'transformers' parity shows the resulting difference)."
    )
    fallback = [n for n, (t, _) in planned.items() if kind == "q8_0" and t == "F16"]
    if fallback:
        job.notes.append(f"Q8_0 needs rows that are multiples of 32; kept F16: {fallback[:4]}")
    hp = gpt2.hyperparameters(state, n_head)
    rows = {"file": path.name, "architecture": "gpt2 (llama.cpp)", "matrices": TYPES[kind][0]}
    rows.update({"layers": hp["n_layer"], "heads": n_head, "width": hp["n_embd"]})
    rows.update({"context": hp["n_positions"], "vocabulary": hp["vocab_size"]})
    rows["tokenizer"] = f"{vocab.model} ({len(vocab.tokens)} tokens)"
    write_model_card(
        job,
        out,
        title=f"GGUF ({TYPES[kind][0]})",
        usage=_usage(job.target / path.name, loaded.tokenizer.decode(held.prompts(1)[0])),
        parity=parity,
        architecture=rows,
    )
    return {"parity": parity, "read_back": readback, "model": rows}


def _gpt2_state(job: ExportJob, model: torch.nn.Module) -> tuple[dict, int, float]:
    """The weights in genlab GPT names, the head count and the LayerNorm epsilon."""
    if job.family == "gpt":
        return gpt2.plain_state(model), model.settings.n_head, gpt2.LAYER_NORM_EPS
    config = model.hf.config
    state = gpt2.from_hf_state(model.hf.state_dict(), config.n_layer)
    return state, config.n_head, float(config.layer_norm_epsilon)


def _planned_tensors(gguf: Any, state: dict, kind: str) -> dict[str, tuple[str, np.ndarray]]:
    """llama.cpp name → (type name, the array as stored), by the converter's rules."""
    matrix_type = TYPES[kind][0]
    planned = {}
    for name, tensor in gpt2.to_gguf_tensors(state).items():
        data = np.ascontiguousarray(tensor.detach().float().cpu().numpy())
        keep_f32 = data.ndim < 2 or name.startswith("position_embd") or name.endswith(".bias")
        qtype = "F32" if keep_f32 else matrix_type
        try:
            stored = gguf.quants.quantize(data, gguf.GGMLQuantizationType[qtype])
        except gguf.QuantError:  # rows not a multiple of the block: F16, as llama.cpp does
            qtype = "F16"
            stored = gguf.quants.quantize(data, gguf.GGMLQuantizationType.F16)
        planned[name] = (qtype, stored)
    return planned


def _write_file(gguf, path, name, planned, state, n_head, eps, vocab: GGUFVocab, kind) -> None:
    hp = gpt2.hyperparameters(state, n_head)
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_name(name)
    writer.add_description("exported by genlab")
    writer.add_file_type(gguf.LlamaFileType[TYPES[kind][1]])
    if kind == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_block_count(hp["n_layer"])
    writer.add_context_length(hp["n_positions"])
    writer.add_embedding_length(hp["n_embd"])
    writer.add_feed_forward_length(4 * hp["n_embd"])
    writer.add_head_count(n_head)
    writer.add_layer_norm_eps(eps)
    writer.add_vocab_size(hp["vocab_size"])
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if vocab.merges is not None:
        writer.add_token_merges(vocab.merges)
    setters = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id}
    setters.update({"pad": writer.add_pad_token_id, "unk": writer.add_unk_token_id})
    for role, token_id in vocab.ids.items():
        if token_id is not None:
            setters[role](token_id)
    writer.add_add_bos_token(False)  # genlab never prepends a token
    if vocab.add_space_prefix is not None:
        writer.add_add_space_prefix(vocab.add_space_prefix)
    for tensor_name, (qtype, stored) in planned.items():
        writer.add_tensor(tensor_name, stored, raw_dtype=gguf.GGMLQuantizationType[qtype])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _read_back(gguf, path: Path, planned: dict, vocab: GGUFVocab) -> tuple[dict, dict]:
    """Read the file with gguf's reader: the check report and the dequantized tensors."""
    reader = gguf.GGUFReader(str(path))
    fields = {name: field.contents() for name, field in reader.fields.items()}
    tensors, types_ok, bytes_ok = {}, True, True
    for t in reader.tensors:
        qtype, stored = planned.get(t.name, (None, None))
        types_ok &= t.tensor_type.name == qtype
        bytes_ok &= stored is not None and np.array_equal(
            np.asarray(t.data).view(np.uint8).ravel(), stored.view(np.uint8).ravel()
        )
        tensors[t.name] = torch.from_numpy(
            np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        )
    vocab_ok = (
        fields.get("tokenizer.ggml.tokens") == vocab.tokens
        and fields.get("tokenizer.ggml.model") == vocab.model
    )
    if vocab.merges is not None:
        vocab_ok &= list(fields.get("tokenizer.ggml.merges") or []) == vocab.merges
    report = {
        "architecture": fields.get("general.architecture"),
        "tensors": len(reader.tensors),
        "tensor_names_match": set(tensors) == set(planned),
        "tensor_types_match": bool(types_ok),
        "tensor_bytes_match": bool(bytes_ok),
        "vocabulary_match": bool(vocab_ok),
        "hyperparameters": {
            k.removeprefix("gpt2."): v for k, v in fields.items() if k.startswith("gpt2.")
        },
    }
    return report, tensors


def _file_model(job: ExportJob, model: torch.nn.Module, written: dict, path: Path, tensors: dict):
    """The model the file describes, as a logits function: hyperparameters from its metadata,
    weights dequantized from its tensors; genlab's GPT (an HF-family run: its GPT-2 class)."""
    gguf = require("gguf", "export")
    fields = {k: f.contents() for k, f in gguf.GGUFReader(str(path)).fields.items()}
    genlab_name = {new: old for old, new in gpt2.gguf_names(written).items()}
    state = {genlab_name[k]: v for k, v in tensors.items()}
    if job.family == "hf":
        hf = copy.deepcopy(model.hf)
        loaded = hf.load_state_dict(gpt2.to_hf_state(state), strict=False)
        # A tied head is not in the file (GPT-2 re-ties it); anything else missing is a bug.
        if loaded.unexpected_keys or set(loaded.missing_keys) - {"lm_head.weight"}:
            raise RuntimeError(f"GGUF tensors do not fit the HF model: {loaded}")
        return lambda x: hf(input_ids=x, use_cache=False).logits
    from genlab.config import ModelConfig
    from genlab.models.gpt import GPT

    vocab, n_embd = int(fields["gpt2.vocab_size"]), int(fields["gpt2.embedding_length"])
    settings = ModelConfig(
        n_layer=int(fields["gpt2.block_count"]),
        n_head=int(fields["gpt2.attention.head_count"]),
        n_embd=n_embd,
    )
    rebuilt = GPT(settings, vocab, int(fields["gpt2.context_length"]))
    if "lm_head.weight" in state:  # an `output` tensor: the head is its own matrix (untied)
        rebuilt.lm_head = torch.nn.Linear(n_embd, vocab, bias=False)
    else:  # llama.cpp reuses token_embd as the output, as the tied GPT does
        state["lm_head.weight"] = state["wte.weight"]
    rebuilt.load_state_dict(state)
    return rebuilt.eval()


def _parity(job, from_file, held: HeldOut, kind, path, readback) -> dict[str, Any]:
    reference = job.lm().model
    context = held.block_size
    windows = held.windows(context)
    inputs = windows[:, :-1]
    diff = max_abs_logit_diff(reference, from_file, inputs)
    ppl_ref, ppl_file = perplexity(reference, windows), perplexity(from_file, windows)
    prompts = held.prompts()
    ref_greedy = greedy(reference, prompts, context)
    report = greedy_report(
        ref_greedy, greedy(from_file, prompts, context), job.lm().tokenizer.decode
    )
    goals = {
        "read_back_identical": goal(
            all(readback[k] for k in readback if k.endswith("_match")), True, "=="
        )
    }
    if kind in LOGIT_GOALS:
        goals["max_abs_logit_diff"] = goal(diff, LOGIT_GOALS[kind])
    if kind == "f32":
        goals["greedy_identical"] = goal(report["identical"], True, "==")
    change = ppl_file / ppl_ref - 1.0
    if kind == "q8_0":
        goals["perplexity_change"] = goal(change, Q8_0_PERPLEXITY_GOAL)
    parity = {
        "measured_with": "gguf's reader: a GPT from the file's metadata and dequantized tensors",
        "windows": len(windows),
        "window_tokens": context,
        "max_abs_logit_diff": diff,
        "perplexity": {"reference": ppl_ref, "export": ppl_file, "relative_change": change},
        "greedy": report,
        "transformers": _transformers_check(job, path, held, reference, windows),
        "goals": goals,
        "ok": all_met(goals),
    }
    return parity


def _transformers_check(job, path: Path, held: HeldOut, reference, windows) -> dict[str, Any]:
    """The file through transformers' GGUF loader, when transformers is installed."""
    from genlab.models.hf import transformers_offline

    try:
        transformers = transformers_offline(models=True)
    except GenlabError:
        return {"skipped": "transformers is not installed"}
    try:
        with quiet_transformers(progress_bars=True):
            return _through_transformers(transformers, job, path, held, reference, windows)
    except (OSError, ValueError, KeyError, RuntimeError, NotImplementedError) as exc:
        # An auxiliary check: the file is verified above; say why this one could not run.
        return {"skipped": f"transformers could not load the file: {first_line(exc)[:200]}"}


def _through_transformers(transformers, job, path: Path, held, reference, windows) -> dict:
    directory, name = str(path.parent), path.name
    config = transformers.AutoConfig.from_pretrained(directory, gguf_file=name)
    # transformers maps gpt2.context_length to `n_ctx`, which GPT2Config does not read: the
    # position table would be built with n_positions=1024 and fail to load. Copy it over;
    # and drop GPT-2's default special ids (50256) when the file names none.
    config.n_positions = getattr(config, "n_ctx", config.n_positions)
    ids = job.lm().tokenizer
    for role in ("bos_token_id", "eos_token_id"):
        value = getattr(config, role, None)
        if value is not None and value >= config.vocab_size:
            setattr(config, role, None)
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, config=config)
    hf.eval()

    def logits(x: torch.Tensor) -> torch.Tensor:
        return hf(input_ids=x, use_cache=False).logits

    result: dict[str, Any] = {
        "loader": f"transformers {transformers.__version__} from_pretrained(gguf_file=...)",
        "activation": getattr(hf.config, "activation_function", None),
        "max_abs_logit_diff": max_abs_logit_diff(reference, logits, windows[:, :-1]),
        "perplexity": perplexity(logits, windows),
    }
    if ids.kind == "char":
        result["tokenizer"] = (
            "not compared: transformers reads a SentencePiece-style GGUF vocabulary with a "
            "leading space (it ignores tokenizer.ggml.add_space_prefix)"
        )
    else:
        tok = transformers.AutoTokenizer.from_pretrained(directory, gguf_file=name)
        result["tokenizer"] = tokenizer_report(
            ids,
            lambda text: tok(text, add_special_tokens=False)["input_ids"],
            lambda i: tok.decode(i, skip_special_tokens=False),
            held.text,
        )
    return result


def _usage(file: Path, prompt: str) -> str:
    return f"""llama.cpp:

```sh
llama-cli -m {file} -p {json.dumps(prompt)} -n 40 --temp 0
```

Python: `gguf` reads the tensors and metadata; transformers dequantizes it into PyTorch
(it reads the context length as `n_ctx` only, so copy it to `n_positions`):

```python
from gguf import GGUFReader
from transformers import AutoConfig, AutoModelForCausalLM

reader = GGUFReader("{file}")
print({{t.name: t.tensor_type.name for t in reader.tensors}})

folder, name = "{file.parent}", "{file.name}"
config = AutoConfig.from_pretrained(folder, gguf_file=name)
config.n_positions = config.n_ctx
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, config=config)
```"""


EXPORTER = Exporter(families=("gpt", "hf"), check=_check, write=_write)

__all__ = ["EXPORTER", "LOGIT_GOALS", "Q8_0_PERPLEXITY_GOAL", "TYPES"]
