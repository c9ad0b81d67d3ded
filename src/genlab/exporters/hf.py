"""`--format hf`: a directory plain transformers loads, no genlab needed.

    AutoModelForCausalLM.from_pretrained(DIR); AutoTokenizer.from_pretrained(DIR)

- genlab GPT runs become `GPT2LMHeadModel` (gpt2.py: tensor names, transposed Conv1D weights,
  `activation_function: gelu`, the exact GELU genlab uses), written directly as
  `model.safetensors` + `config.json`; runs with `model.qk_norm: true` or `model.bias: false`
  are refused (GPT-2 has neither).
- HF-family runs: the fine-tuned model in its own architecture (`save_pretrained`), rebuilt
  from the chosen checkpoint so `--checkpoint` and EMA weights count.
- LoRA runs: merged weights; with `--adapter` the adapter alone in PEFT's format (for a GPT run
  renamed to GPT-2's module names, to apply to the base run exported with `--format hf`).
- The tokenizer as a `PreTrainedTokenizerFast` (tokenizer.py), `generation_config.json`
  (genlab's sampling defaults) and the model card (card.py).

Parity is measured by loading the written directory back with transformers.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import torch

from genlab.errors import ConfigError, require
from genlab.exporters import gpt2
from genlab.exporters.card import write_model_card
from genlab.exporters.job import Exporter, ExportJob, merged_copy
from genlab.exporters.parity import (
    HeldOut,
    all_met,
    context_length,
    goal,
    greedy,
    greedy_report,
    held_out,
    max_abs_logit_diff,
    quiet_transformers,
    tokenizer_report,
)
from genlab.exporters.tokenizer import special_ids, transformers_tokenizer

MAX_ABS_LOGIT_DIFF = 1e-4  # goal for an exact export (fp32 both sides)
# genlab's `generate` defaults, so a pipeline samples as `genlab generate` does.
SAMPLING = {"do_sample": True, "temperature": 0.8, "top_k": 50}


def _check(job: ExportJob) -> None:
    require("transformers", "export")
    if job.family == "gpt":
        gpt2.check_gpt2_compatible(job.cfg, "hf")
    if job.options.adapter:
        ft = job.cfg.finetune
        if not job.is_lora:
            raise ConfigError(
                f"--adapter exports a LoRA adapter, but this run is not a LoRA fine-tune "
                f"(finetune.method={ft.method!r}); drop --adapter"
            )
        if ft.reinit_head or ft.resize_embeddings:
            raise ConfigError(
                "--adapter: this run also trained a new output head or resized the embeddings "
                "(finetune.reinit_head / resize_embeddings), which a LoRA adapter alone does not "
                "hold; drop --adapter to export merged weights"
            )


def _write(job: ExportJob, out: Path) -> dict[str, Any]:
    from genlab.models.hf import transformers_offline

    transformers = transformers_offline(models=True)
    loaded = job.lm()
    held = held_out(loaded)
    context = context_length(loaded.model)
    tokenizer = transformers_tokenizer(loaded.tokenizer, context)
    if job.options.adapter:
        return _write_adapter(job, out, held, tokenizer)
    model = merged_copy(loaded.model) if job.is_lora else loaded.model
    if job.family == "gpt":
        state = gpt2.plain_state(model)
        ids = special_ids(loaded.tokenizer)
        config = transformers.GPT2Config(**gpt2.hf_config_kwargs(state, model.settings.n_head, ids))
        _save_gpt2(config, state, out)
        architecture = "GPT2LMHeadModel"
    else:
        model.hf.save_pretrained(str(out))
        config = model.hf.config
        architecture = type(model.hf).__name__
    tokenizer.save_pretrained(str(out))
    if loaded.tokenizer.kind != "hf_pretrained":
        _name_tokenizer_class(out)
    if job.family == "gpt":
        transformers.GenerationConfig(
            **SAMPLING,
            max_new_tokens=max(1, context // 2),
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
        ).save_pretrained(str(out))
    if loaded.tokenizer.kind in ("char", "byte"):
        job.notes.append(
            f"A {loaded.tokenizer.kind} tokenizer has no end-of-text token: generation runs "
            "until max_new_tokens (documents were separated by a blank line in training)."
        )
    job.notes.append(
        f"The context is {context} tokens: keep prompt + max_new_tokens within it "
        "(positions beyond it do not exist)."
    )
    if job.is_lora:
        job.notes.append(
            "LoRA adapter merged into the weights (export with --adapter for it alone)."
        )
    with quiet_transformers():
        hf_model = transformers.AutoModelForCausalLM.from_pretrained(
            str(out), local_files_only=True
        )
        parity = _parity(job, out, held, hf_model.eval())
    rows = _architecture_rows(architecture, config, context)
    write_model_card(
        job,
        out,
        title="Hugging Face transformers",
        usage=_usage(job.target, held, loaded.tokenizer, context),
        parity=parity,
        architecture=rows,
        front_matter={
            "library_name": "transformers",
            "pipeline_tag": "text-generation",
            "tags": ["genlab", getattr(config, "model_type", "gpt2")],
        },
    )
    return {"parity": parity, "model": {"architecture": architecture, **rows}}


def _name_tokenizer_class(out: Path) -> None:
    """Say `PreTrainedTokenizerFast` in tokenizer_config.json: the class every transformers
    version knows (v5 saves its internal name, which older versions cannot load)."""
    import json

    path = out / "tokenizer_config.json"
    spec = json.loads(path.read_text(encoding="utf-8"))
    spec["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(spec, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _save_gpt2(config: Any, state: dict[str, torch.Tensor], out: Path) -> None:
    """config.json + model.safetensors as `save_pretrained` writes them for GPT-2 (a tied head
    is not stored: GPT-2 re-ties it on load)."""
    from safetensors.torch import save_file

    config.architectures = ["GPT2LMHeadModel"]
    config.save_pretrained(str(out))
    tensors = {k: v.detach().cpu().contiguous() for k, v in gpt2.to_hf_state(state).items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})


def _parity(job: ExportJob, out: Path, held: HeldOut, hf_model: Any) -> dict[str, Any]:
    """Logits, greedy text and tokenizer of the written directory against the genlab model."""
    from genlab.models.hf import transformers_offline

    transformers = transformers_offline(models=True)
    loaded = job.lm()
    context = held.block_size
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out), local_files_only=True)

    def hf_logits(x: torch.Tensor) -> torch.Tensor:
        return hf_model(input_ids=x, use_cache=False).logits

    windows = held.windows(context)
    diff = max_abs_logit_diff(loaded.model, hf_logits, windows[:, :-1])
    prompts = held.prompts()
    reference = greedy(loaded.model, prompts, context)
    report = greedy_report(reference, greedy(hf_logits, prompts, context), loaded.tokenizer.decode)
    report["transformers_generate"] = _generate_check(hf_model, prompts, reference, context)
    tok = tokenizer_report(
        loaded.tokenizer,
        lambda text: hf_tok(text)["input_ids"],
        lambda ids: hf_tok.decode(ids, skip_special_tokens=False),
        held.text,
    )
    goals = {
        "max_abs_logit_diff": goal(diff, MAX_ABS_LOGIT_DIFF),
        "greedy_identical": goal(report["identical"], True, "=="),
        "tokenizer_identical": goal(tok["identical_ids"] and tok["identical_decode"], True, "=="),
    }
    return {
        "measured_with": f"transformers {transformers.__version__} "
        f"({type(hf_model).__name__}), fp32 on CPU",
        "windows": len(windows),
        "window_tokens": context,
        "max_abs_logit_diff": diff,
        "greedy": report,
        "tokenizer": tok,
        "goals": goals,
        "ok": all_met(goals),
    }


@torch.no_grad()
def _generate_check(
    hf_model: Any, prompts: list[list[int]], reference: list[list[int]], context: int
) -> dict[str, Any]:
    """`hf_model.generate` (greedy, KV cache) within the context against genlab's greedy ids."""
    same, compared = 0, 0
    for prompt, ref in zip(prompts, reference, strict=True):
        room = min(len(ref), context - len(prompt))
        if room < 1:
            continue
        x = torch.tensor([prompt])
        y = hf_model.generate(
            x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=room,
            min_new_tokens=room,
            do_sample=False,
            pad_token_id=0,
        )
        compared += 1
        same += y[0, len(prompt) :].tolist() == ref[:room]
    return {"prompts": compared, "identical_prompts": same}


def _write_adapter(job: ExportJob, out: Path, held: HeldOut, tokenizer: Any) -> dict[str, Any]:
    """The LoRA adapter alone (PEFT format) + tokenizer + card; parity through
    `PeftModel.from_pretrained(base, out)`."""
    from genlab.finetune.lora import ADAPTER_CONFIG, save_adapter
    from genlab.models.hf import transformers_offline

    transformers = transformers_offline(models=True)
    peft = require("peft", "hf")
    loaded = job.lm()
    model = loaded.model
    init_from = str(job.cfg.finetune.init_from)
    with tempfile.TemporaryDirectory(prefix="genlab-export-base-") as scratch:
        if job.family == "gpt":
            _save_gpt_adapter(model, out)
            state = gpt2.plain_state(model)
            ids = special_ids(loaded.tokenizer)
            config = transformers.GPT2Config(
                **gpt2.hf_config_kwargs(state, model.settings.n_head, ids)
            )
            _save_gpt2(config, state, Path(scratch))
            base = transformers.AutoModelForCausalLM.from_pretrained(scratch, local_files_only=True)
            how = f"`genlab export {init_from} --format hf --out BASE`"
        else:
            save_adapter(model, out)
            from genlab.models.hf import check_model_dir

            base = transformers.AutoModelForCausalLM.from_pretrained(
                str(check_model_dir(init_from)), local_files_only=True
            )
            how = f"the Hugging Face model at `{init_from}`"
        _set_base_name(out / ADAPTER_CONFIG, init_from)
        tokenizer.save_pretrained(str(out))
        if loaded.tokenizer.kind != "hf_pretrained":
            _name_tokenizer_class(out)
        with quiet_transformers():
            adapted = peft.PeftModel.from_pretrained(base, str(out)).eval()
            parity = _parity(job, out, held, adapted)
    job.notes.append(f"This is a LoRA adapter: load the base model ({how}) and apply it.")
    usage = _adapter_usage(job.target, how)
    rows = {"adapter": "LoRA (PEFT)", "base model": init_from, "rank": job.cfg.finetune.lora.rank}
    front = {"library_name": "peft", "pipeline_tag": "text-generation", "tags": ["genlab", "lora"]}
    write_model_card(
        job,
        out,
        title="LoRA adapter (PEFT)",
        usage=usage,
        parity=parity,
        architecture=rows,
        front_matter=front,
    )
    return {"parity": parity, "model": rows}


def _save_gpt_adapter(model: torch.nn.Module, out: Path) -> None:
    """A genlab GPT's adapter under GPT-2's module names (`blocks.0.attn.qkv` →
    `transformer.h.0.attn.c_attn`). LoRA's A (r, in) and B (out, r) act on activations, so they
    are the same for Conv1D; `fan_in_fan_out` tells PEFT to transpose when it merges."""
    from safetensors.torch import save_file

    from genlab.finetune.lora import ADAPTER_WEIGHTS, PEFT_PREFIX, lora_state_dict

    renames = {
        f"blocks.{i}.{g}.": f"transformer.h.{i}.{hf}."
        for i in range(len(model.blocks))
        for g, hf, _, _ in gpt2.BLOCK_LAYOUT
    }
    state, modules = {}, set()
    for key, tensor in lora_state_dict(model).items():
        prefix = next((p for p in renames if key.startswith(p)), None)
        if prefix is None:
            raise ConfigError(
                f"LoRA on {key.rsplit('.lora_', 1)[0]!r} has no GPT-2 module to map to; drop "
                "--adapter to export merged weights"
            )
        name = renames[prefix] + key[len(prefix) :]
        modules.add(name.split(".lora_")[0])
        state[PEFT_PREFIX + name] = tensor.detach().cpu().contiguous()
    save_file(state, str(out / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    config = copy.deepcopy(model.peft_config["default"])
    config.target_modules = sorted(modules)
    config.fan_in_fan_out = True  # GPT-2's Conv1D stores (in, out)
    config.task_type = "CAUSAL_LM"
    config.save_pretrained(str(out))


def _set_base_name(path: Path, base: str) -> None:
    import json

    spec = json.loads(path.read_text(encoding="utf-8"))
    spec["base_model_name_or_path"] = base
    path.write_text(json.dumps(spec, indent=2), encoding="utf-8")


def _architecture_rows(architecture: str, config: Any, context: int) -> dict[str, Any]:
    return {
        "architecture": architecture,
        "layers": getattr(config, "n_layer", getattr(config, "num_hidden_layers", None)),
        "heads": getattr(config, "n_head", getattr(config, "num_attention_heads", None)),
        "width": getattr(config, "n_embd", getattr(config, "hidden_size", None)),
        "context": context,
        "vocabulary": config.vocab_size,
        "activation": getattr(config, "activation_function", getattr(config, "hidden_act", None)),
        "tied embeddings": bool(getattr(config, "tie_word_embeddings", True)),
    }


def _usage(out: Path, held: HeldOut, tokenizer: Any, context: int) -> str:
    prompt = tokenizer.decode(held.prompts(1)[0])
    new = max(1, min(40, context - len(tokenizer.encode(prompt))))
    return f"""```python
from transformers import pipeline

generate = pipeline("text-generation", model="{out}")
print(generate({prompt!r}, max_new_tokens={new}, do_sample=False)[0]["generated_text"])
```

Or `AutoModelForCausalLM.from_pretrained(DIR)` and `AutoTokenizer.from_pretrained(DIR)`.
`generation_config.json` samples as `genlab generate` does (temperature 0.8, top-k 50;
{max(1, context // 2)} new tokens unless `max_new_tokens` says otherwise)."""


def _adapter_usage(out: Path, how: str) -> str:
    return f"""Export the base model first ({how}), then:

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("BASE")
model = PeftModel.from_pretrained(base, "{out}")
tokenizer = AutoTokenizer.from_pretrained("{out}")
```"""


EXPORTER = Exporter(families=("gpt", "hf"), check=_check, write=_write)

__all__ = ["EXPORTER", "MAX_ABS_LOGIT_DIFF"]
