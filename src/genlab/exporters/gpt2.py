"""genlab's GPT in GPT-2's layout: one table of tensor names, used by the Hugging Face and GGUF
exporters alike.

genlab's GPT is GPT-2-shaped: pre-LayerNorm blocks (eps 1e-5), one fused qkv projection split
q, k, v in that order, exact (erf) GELU, learned positions, tied input/output embeddings.
Only the storage differs:

- Hugging Face GPT-2 keeps its projections in `Conv1D` modules whose weight is (in, out), the
  transpose of a `nn.Linear` weight (out, in): those four weights are transposed.
- llama.cpp's GPT-2 (`gguf` names `blk.N.attn_qkv`, ...) stores them as `nn.Linear` does, so
  genlab's tensors go in unchanged.

Two options have no GPT-2 equivalent and are refused (`unsupported_options`): `model.qk_norm`
(LayerNorm on queries and keys) and `model.bias: false` (GPT-2 always has biases).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from genlab.config import ExperimentConfig
from genlab.errors import ConfigError

LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which genlab's GPT uses

# Per block: genlab module, Hugging Face GPT-2 module, llama.cpp GPT-2 tensor, Conv1D in HF.
BLOCK_LAYOUT = (
    ("ln1", "ln_1", "attn_norm", False),
    ("attn.qkv", "attn.c_attn", "attn_qkv", True),
    ("attn.proj", "attn.c_proj", "attn_output", True),
    ("ln2", "ln_2", "ffn_norm", False),
    ("mlp.fc", "mlp.c_fc", "ffn_up", True),
    ("mlp.proj", "mlp.c_proj", "ffn_down", True),
)
# Outside the blocks: genlab name, Hugging Face name, llama.cpp name.
TOP_LAYOUT = (
    ("wte.weight", "transformer.wte.weight", "token_embd.weight"),
    ("wpe.weight", "transformer.wpe.weight", "position_embd.weight"),
    ("ln_f.weight", "transformer.ln_f.weight", "output_norm.weight"),
    ("ln_f.bias", "transformer.ln_f.bias", "output_norm.bias"),
)
HEAD = ("lm_head.weight", "lm_head.weight", "output.weight")  # only when untied


def unsupported_options(cfg: ExperimentConfig) -> list[str]:
    """The run's model options GPT-2 cannot hold, as `key: value` strings (empty: it fits)."""
    found = []
    if cfg.model.qk_norm:
        found.append("model.qk_norm: true")
    if not cfg.model.bias:
        found.append("model.bias: false")
    return found


def check_gpt2_compatible(cfg: ExperimentConfig, fmt: str) -> None:
    """Refuse a GPT run whose architecture GPT-2 (the layout of `fmt`) cannot hold."""
    found = unsupported_options(cfg)
    if found:
        raise ConfigError(
            f"--format {fmt} writes GPT-2, which has no equivalent of {' and '.join(found)}; "
            "export this run with --format onnx (any architecture), or train with "
            "model.qk_norm=false model.bias=true"
        )


def plain_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under plain GPT names: a LoRA-injected model's base weights
    (`...qkv.base_layer.weight` → `...qkv.weight`) without its adapter tensors."""
    out = {}
    for name, tensor in model.state_dict().items():
        if "lora_" in name:
            continue
        out[name.replace(".base_layer.", ".")] = tensor.detach()
    return out


def n_layers(state: Mapping[str, torch.Tensor]) -> int:
    return len({k.split(".")[1] for k in state if k.startswith("blocks.")})


def is_tied(state: Mapping[str, torch.Tensor]) -> bool:
    """Tied when there is no separate head, or the head is the embedding's storage."""
    head = state.get(HEAD[0])
    return head is None or head.data_ptr() == state["wte.weight"].data_ptr()


def hyperparameters(state: Mapping[str, torch.Tensor], n_head: int) -> dict[str, int]:
    """Sizes read from the tensors themselves (a fine-tuned run may have resized its vocab)."""
    vocab, n_embd = state["wte.weight"].shape
    return {
        "vocab_size": int(vocab),
        "n_positions": int(state["wpe.weight"].shape[0]),
        "n_embd": int(n_embd),
        "n_layer": n_layers(state),
        "n_head": int(n_head),
    }


def _named(state: Mapping[str, torch.Tensor], column: int) -> list[tuple[str, str, bool]]:
    """(genlab name, target name, is a Conv1D weight in HF) for every tensor, in file order;
    `column` 1 names the Hugging Face tensors, 2 the llama.cpp ones."""
    rows = [(row[0], row[column], False) for row in TOP_LAYOUT]
    for i in range(n_layers(state)):
        for g, hf, gg, conv in BLOCK_LAYOUT:
            target = f"transformer.h.{i}.{hf}" if column == 1 else f"blk.{i}.{gg}"
            for p in ("weight", "bias"):
                rows.append((f"blocks.{i}.{g}.{p}", f"{target}.{p}", conv and p == "weight"))
    if not is_tied(state):
        rows.append((HEAD[0], HEAD[column], False))
    return rows


def to_hf_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """genlab GPT weights → `GPT2LMHeadModel` state dict (Conv1D weights transposed)."""
    return {
        target: (state[name].t() if transpose else state[name]).contiguous()
        for name, target, transpose in _named(state, 1)
    }


def gguf_names(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """genlab GPT name → llama.cpp GPT-2 tensor name, for every tensor of `state`."""
    return {name: target for name, target, _ in _named(state, 2)}


def to_gguf_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """genlab GPT weights → llama.cpp GPT-2 tensor names (Linear layout, unchanged)."""
    return {target: state[name] for name, target in gguf_names(state).items()}


def from_hf_state(hf_state: Mapping[str, torch.Tensor], n_layer: int) -> dict[str, torch.Tensor]:
    """A Hugging Face `GPT2LMHeadModel` state dict → genlab GPT names (the inverse of
    `to_hf_state`), so an HF-family GPT-2 run goes through the same GGUF writer."""
    out: dict[str, torch.Tensor] = {}
    for g, hf, _ in TOP_LAYOUT:
        out[g] = hf_state[hf]
    for i in range(n_layer):
        for g, hf, _, conv in BLOCK_LAYOUT:
            for p in ("weight", "bias"):
                tensor = hf_state[f"transformer.h.{i}.{hf}.{p}"]
                out[f"blocks.{i}.{g}.{p}"] = tensor.t() if conv and p == "weight" else tensor
    head = hf_state.get(HEAD[1])
    out[HEAD[0]] = head if head is not None else out["wte.weight"]
    return out


def hf_config_kwargs(
    state: Mapping[str, torch.Tensor], n_head: int, special_ids: Mapping[str, int | None]
) -> dict[str, Any]:
    """`GPT2Config` arguments that make GPT-2 compute exactly what genlab's GPT computes."""
    return {
        **hyperparameters(state, n_head),
        # "gelu" is the exact erf GELU (torch's default, genlab's); GPT-2's own default
        # "gelu_new" is the tanh approximation and would shift every logit slightly.
        "activation_function": "gelu",
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "tie_word_embeddings": is_tied(state),
        "bos_token_id": special_ids.get("bos"),
        "eos_token_id": special_ids.get("eos"),
        "pad_token_id": special_ids.get("pad"),
    }


__all__ = [
    "BLOCK_LAYOUT",
    "LAYER_NORM_EPS",
    "TOP_LAYOUT",
    "check_gpt2_compatible",
    "from_hf_state",
    "gguf_names",
    "hf_config_kwargs",
    "hyperparameters",
    "is_tied",
    "plain_state",
    "to_gguf_tensors",
    "to_hf_state",
    "unsupported_options",
]
