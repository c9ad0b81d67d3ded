"""LoRA through `peft`, on genlab's GPT and on Hugging Face causal LMs.

Adapters are injected IN PLACE (`peft.inject_adapter_in_model`): the model keeps its class and
methods (`loss`, `generate`, `spec`), so the training loop needs no wrapper type. The base
weights get `requires_grad=False`; only `lora_A` / `lora_B` train.

An adapter is saved alone as a standard PEFT directory (`adapter_config.json` +
`adapter_model.safetensors`, keys prefixed `base_model.model.`), so for an HF model
`peft.PeftModel.from_pretrained(base, adapter_dir)` reads it too. `merge_lora` folds
B·A·(alpha/r) into the base weights and removes the LoRA layers: the merged model is a plain
model again with the same outputs as base + adapter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genlab.config import LoraSection
from genlab.errors import CheckpointError, ConfigError, require
from genlab.fileio import publish_tree

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PEFT_PREFIX = "base_model.model."  # the key prefix PeftModel uses; kept for interoperability

# peft matches a target name against the END of each module's dotted name.
GPT_TARGETS = ("qkv", "proj", "fc")  # genlab GPT: attn.qkv, attn.proj, mlp.fc, mlp.proj
GPT2_TARGETS = ("c_attn", "c_proj", "c_fc")  # HF GPT-2 (Conv1D layers)
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _peft() -> Any:
    from genlab.models.hf import transformers_offline

    transformers_offline()  # peft imports transformers: keep the Hub off
    return require("peft", "hf")


def _core(model: nn.Module) -> nn.Module:
    """Where adapters go: the wrapped PreTrainedModel of an HFCausalLM, else the model."""
    return getattr(model, "hf", model)


def default_targets(model: nn.Module) -> tuple[str, ...]:
    """Default LoRA targets: attention and MLP projections of the model's family."""
    names = {name.rsplit(".", 1)[-1] for name, _ in _core(model).named_modules()}
    for family in (GPT2_TARGETS, LLAMA_TARGETS, GPT_TARGETS):
        if set(family) <= names:
            return family
    raise ConfigError(
        f"no default LoRA targets for {type(_core(model)).__name__}; set "
        "finetune.lora.target_modules to the names of its Linear layers (e.g. [q_proj, v_proj])"
    )


def apply_lora(model: nn.Module, spec: LoraSection) -> nn.Module:
    """Inject LoRA adapters into `model` in place and freeze everything else; returns it."""
    peft = _peft()
    core = _core(model)
    targets = list(spec.target_modules or default_targets(model))
    # transformers' Conv1D (GPT-2) stores weights as (in, out): LoRA must transpose.
    conv1d = any(type(m).__name__ == "Conv1D" for m in core.modules())
    config = peft.LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=targets,
        fan_in_fan_out=conv1d,
        bias="none",
        task_type="CAUSAL_LM" if hasattr(core, "config") else None,
    )
    try:
        peft.inject_adapter_in_model(config, core)
    except ValueError as exc:
        raise ConfigError(
            f"finetune.lora.target_modules {targets} do not fit {type(core).__name__} "
            f"({str(exc).splitlines()[0][:160]}); name Linear layers of the model"
        ) from None
    return model


def has_lora(model: nn.Module) -> bool:
    from_peft = _peft().tuners.tuners_utils.BaseTunerLayer
    return any(isinstance(m, from_peft) for m in model.modules())


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Adapter weights only, with PEFT's key names (adapter name removed)."""
    peft = _peft()
    core = _core(model)
    if not hasattr(core, "peft_config"):
        raise ConfigError("the model has no LoRA adapter; call apply_lora first")
    return peft.get_peft_model_state_dict(core)


def save_adapter(model: nn.Module, directory: str | Path) -> Path:
    """Write the adapter alone: adapter_config.json + adapter_model.safetensors."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        PEFT_PREFIX + k: v.detach().contiguous().cpu() for k, v in lora_state_dict(model).items()
    }
    save_file(state, str(directory / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    _core(model).peft_config["default"].save_pretrained(str(directory))
    publish_tree(directory)  # safetensors writes 0600; the user's umask decides
    return directory


def load_adapter(model: nn.Module, directory: str | Path) -> nn.Module:
    """Inject the adapter saved in `directory` into a fresh base `model` (in place)."""
    from safetensors.torch import load_file

    peft = _peft()
    directory = Path(directory)
    if not (directory / ADAPTER_WEIGHTS).is_file() or not (directory / ADAPTER_CONFIG).is_file():
        raise CheckpointError(
            f"no LoRA adapter in {str(directory)!r} (needs {ADAPTER_CONFIG} and "
            f"{ADAPTER_WEIGHTS}); point at a directory written by save_adapter"
        )
    raw = json.loads((directory / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    config = peft.LoraConfig.from_peft_type(**raw)
    if config.peft_type != peft.PeftType.LORA:
        raise CheckpointError(
            f"{str(directory)!r} holds a {config.peft_type} adapter, not LoRA; genlab loads "
            "LoRA adapters only"
        )
    config.inference_mode = False
    state = {
        k.removeprefix(PEFT_PREFIX): v for k, v in load_file(directory / ADAPTER_WEIGHTS).items()
    }
    core = _core(model)
    try:
        peft.inject_adapter_in_model(config, core)
    except ValueError as exc:
        raise CheckpointError(
            f"the adapter in {str(directory)!r} does not fit {type(core).__name__} "
            f"({str(exc).splitlines()[0][:160]}); load it onto the base model it was trained on"
        ) from None
    result = peft.set_peft_model_state_dict(core, state)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"the adapter in {str(directory)!r} does not fit the model: missing {missing[:3]}, "
            f"unexpected {list(result.unexpected_keys)[:3]}; load it onto the base it came from"
        )
    return model


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA adapter into its base layer and remove the LoRA layers, in place.

    Afterwards the model is structurally the plain base model again (same state_dict keys),
    so it saves as a normal checkpoint / `save_pretrained` directory.
    """
    peft = _peft()
    tuner_layer = peft.tuners.tuners_utils.BaseTunerLayer
    core = _core(model)
    # Collect first: replacing modules while iterating named_modules would skip some.
    targets = [(n, m) for n, m in core.named_modules() if isinstance(m, tuner_layer)]
    if not targets:
        raise ConfigError("the model has no LoRA adapter to merge; call apply_lora first")
    for name, layer in targets:
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = core.get_submodule(parent_name) if parent_name else core
        setattr(parent, child, layer.get_base_layer())
    if hasattr(core, "peft_config"):
        del core.peft_config
    return model


def trainable_names(model: nn.Module) -> Sequence[str]:
    """Names of the parameters that will train (handy for logs and tests)."""
    return [n for n, p in model.named_parameters() if p.requires_grad]
