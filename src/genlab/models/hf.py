"""Hugging Face causal LMs from a LOCAL directory, wrapped to look like genlab's GPT.

Never the network: every `from_pretrained` call passes `local_files_only=True`, and
`HF_HUB_OFFLINE=1` is set (if the user has not set it) before `transformers` is first imported
here, so that nothing in huggingface_hub tries to reach the Hub either. A model directory is
what `save_pretrained` writes: `config.json`, `*.safetensors` weights and the tokenizer files.

`HFCausalLM` gives the loop the same surface as `genlab.models.gpt.GPT`: `forward(idx) ->
logits`, `loss(idx, targets)`, `generate(...)`. `HFPretrainedTokenizer` ("hf_pretrained")
implements genlab's Tokenizer protocol (`genlab.data.tokenizers.TOKENIZERS` names its loader).

Shapes: B batch, T time, V vocabulary (the model's, which may exceed the tokenizer's).
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genlab.data.tokenizers import TOKENIZER_FILE
from genlab.errors import CheckpointError, first_line, require
from genlab.fileio import publish_tree
from genlab.models.gpt import next_token_loss, sample_tokens

HF_MODEL_SUBDIR = "hf_model"  # where a run directory keeps a save_pretrained copy
HF_TOKENIZER_SUBDIR = "hf_pretrained"  # HF tokenizer files inside a genlab tokenizer dir


def transformers_offline(models: bool = False) -> Any:
    """Import `transformers` with the Hub switched off (HF_HUB_OFFLINE=1 unless already set).

    The variable is read by huggingface_hub at import time, so it only takes effect when this
    is the first import; `local_files_only=True` on every load is what guarantees no download.
    `models`: the caller builds or loads models, so transformers' modeling code is imported
    here, inside `require`'s quiet window: imported later (lazily, by the first model class
    used) it pulls in torchao, whose kernel-library and pytree messages then reach stderr.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = require("transformers", "hf")
    if models:
        require("transformers.modeling_utils", "hf")
    # genlab draws its own progress; the per-shard load/save bars would interleave with it.
    transformers.utils.logging.disable_progress_bar()
    return transformers


def check_model_dir(path: str | Path) -> Path:
    """Return `path` if it is a loadable local HF model directory, else a CheckpointError."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise CheckpointError(
            f"Hugging Face model directory {str(path)!r} does not exist; point "
            "finetune.init_from at a local directory written by save_pretrained (genlab never "
            "downloads models)"
        )
    if not (p / "config.json").is_file():
        raise CheckpointError(
            f"{str(p)!r} has no config.json, so it is not a Hugging Face model directory; "
            "point at the folder written by model.save_pretrained(dir)"
        )
    if not any(p.glob("*.safetensors")):
        raise CheckpointError(
            f"{str(p)!r} has no *.safetensors weights (found {sorted(f.name for f in p.iterdir())}"
            "); re-save the model with model.save_pretrained(dir) (safetensors is the default)"
        )
    return p


class HFCausalLM(nn.Module):
    """A transformers causal LM behind genlab's GPT interface.

    `hf` is the wrapped `PreTrainedModel`; `block_size` is the longest context `generate` feeds
    it (default: the model's position limit).
    """

    def __init__(self, hf: nn.Module, block_size: int | None = None):
        super().__init__()
        self.hf = hf
        limit = _max_positions(hf.config)
        self.block_size = int(block_size or limit or 1024)

    @property
    def vocab_size(self) -> int:
        return int(self.hf.get_input_embeddings().weight.shape[0])

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) int64 → logits (B, T, V)."""
        # No KV cache during training/eval: it would only cost memory here.
        return self.hf(input_ids=idx, use_cache=False).logits

    def start_decoding(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """A decoder for `sample_tokens`: called with the tokens not seen yet (B, T_new), it
        returns their logits (B, T_new, V) and keeps the model's own key/value cache."""
        state: dict[str, Any] = {"past": None}
        keyword = _cache_keyword(self.hf)

        def decode(idx: torch.Tensor) -> torch.Tensor:
            out = self.hf(input_ids=idx, use_cache=True, **{keyword: state["past"]})
            state["past"] = getattr(out, keyword)
            return out.logits

        return decode

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over all (B, T) targets, in nats (targets are already
        shifted by the data pipeline, exactly as for genlab's GPT)."""
        return next_token_loss(self(idx), targets)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Extend idx (B, T) by sampling; temperature 0 means greedy decoding.

        Same sampling rule as GPT.generate (one shared function), so a seed gives the same
        kind of sample whatever the model family.
        """
        return sample_tokens(
            self, idx, self.block_size, max_new_tokens, temperature, top_k, top_p, generator
        )

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the wrapped model (e.g. after fine-tuning or a LoRA merge) as a standard HF
        directory that `AutoModelForCausalLM.from_pretrained(directory)` reloads."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.hf.save_pretrained(str(directory))
        publish_tree(directory)  # safetensors writes 0600; the user's umask decides
        return directory


def load_hf_causal_lm(
    path: str | Path, block_size: int | None = None, dtype: torch.dtype | None = None
) -> HFCausalLM:
    """Load a local HF causal-LM directory (offline) into an `HFCausalLM`."""
    p = check_model_dir(path)
    transformers = transformers_offline(models=True)
    kwargs: dict[str, Any] = {"local_files_only": True, "use_safetensors": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(p), **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        first = first_line(exc)
        raise CheckpointError(
            f"cannot load a causal LM from {str(p)!r} ({first}); check that config.json and "
            "the safetensors weights were written together by save_pretrained"
        ) from None
    return HFCausalLM(hf, block_size)


def save_hf_model(
    model: nn.Module,
    run_dir: str | Path,
    subdir: str = HF_MODEL_SUBDIR,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Save an `HFCausalLM` (or a bare PreTrainedModel) into `run_dir/subdir`; with
    `state_dict` (the wrapper's keys, e.g. gathered from FSDP shards) those weights instead of
    the model's own tensors."""
    hf = model.hf if isinstance(model, HFCausalLM) else model
    if not hasattr(hf, "save_pretrained"):
        raise CheckpointError(
            f"save_hf_model needs a Hugging Face model, got {type(model).__name__}; save genlab "
            "models with the normal checkpoints"
        )
    out = Path(run_dir) / subdir
    out.mkdir(parents=True, exist_ok=True)
    if state_dict is not None and isinstance(model, HFCausalLM):
        state_dict = {k.removeprefix("hf."): v for k, v in state_dict.items()}
    hf.save_pretrained(str(out), state_dict=state_dict)
    publish_tree(out)
    return out


class HFPretrainedTokenizer:
    """genlab Tokenizer over a transformers tokenizer loaded from a local directory.

    encode() adds no special tokens (genlab's data pipeline places its own separators);
    decode() keeps special tokens and does not "clean up" spaces, so decode(encode(t)) == t for
    byte-level tokenizers.
    """

    kind = "hf_pretrained"

    def __init__(self, tok: Any):
        self.tok = tok
        self.vocab_size = len(tok)  # base vocabulary + added tokens
        self.eot_id: int | None = tok.eos_token_id

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(
            [int(i) for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False
        )

    def byte_lengths(self) -> np.ndarray | None:
        """Exact bytes per id for byte-level (GPT-2 style) fast tokenizers; None otherwise."""
        from genlab.data.bpe import byte_level_lengths

        backend = getattr(self.tok, "backend_tokenizer", None)
        if backend is None:
            return None
        table = byte_level_lengths(backend)
        return None if table is None else table[: self.vocab_size]

    def save(self, directory: Path) -> None:
        # HF's own files include a tokenizer.json, so they go one level down; genlab's
        # tokenizer.json (the "kind" record) stays at the top for load_tokenizer.
        directory = Path(directory)
        self.tok.save_pretrained(str(directory / HF_TOKENIZER_SUBDIR))
        spec = {"kind": self.kind, "dir": HF_TOKENIZER_SUBDIR, "vocab_size": self.vocab_size}
        (directory / TOKENIZER_FILE).write_text(json.dumps(spec), encoding="utf-8")

    @classmethod
    def from_spec(cls, spec: dict, directory: Path) -> HFPretrainedTokenizer:
        """Rebuild from genlab's tokenizer.json record (the HF files one level down)."""
        sub = spec.get("dir", HF_TOKENIZER_SUBDIR)
        if not isinstance(sub, str) or Path(sub).name != sub:
            raise CheckpointError(
                f"the hf_pretrained tokenizer record in {directory} names {str(sub)[:60]!r}, "
                f"expected a sub-directory name such as {HF_TOKENIZER_SUBDIR!r}"
            )
        return load_hf_tokenizer(Path(directory) / sub)


def load_hf_tokenizer(path: str | Path) -> HFPretrainedTokenizer:
    """The tokenizer of a local HF model directory (offline)."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise CheckpointError(
            f"Hugging Face tokenizer directory {str(path)!r} does not exist; point at a local "
            "directory written by tokenizer.save_pretrained (genlab never downloads tokenizers)"
        )
    transformers = transformers_offline()
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = first_line(exc)
        raise CheckpointError(
            f"cannot load a tokenizer from {str(p)!r} ({first}); save it next to the model "
            "with tokenizer.save_pretrained(dir)"
        ) from None
    return HFPretrainedTokenizer(tok)


def _cache_keyword(hf: nn.Module) -> str:
    """What this transformers version calls the key/value cache, in a model's forward and
    its output: `cache` (5.x; `past_key_values` is deprecated there) or `past_key_values`.
    Asked of the base model: a peft wrapper's forward takes **kwargs."""
    base = hf.get_base_model() if hasattr(hf, "get_base_model") else hf
    names = inspect.signature(type(base).forward).parameters
    return "cache" if "cache" in names else "past_key_values"


def _max_positions(config: Any) -> int | None:
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
