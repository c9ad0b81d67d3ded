"""Vocabulary checks when a pretrained model meets a (possibly different) tokenizer.

A data token id >= the model's vocabulary would index past the embedding table (a crash on CPU,
garbage or a device assert on GPU), so a data vocabulary larger than the model's is an error
unless the user asks for the embeddings to be resized. A smaller data vocabulary is harmless
(the extra rows are never targets) and is left alone unless resizing is asked for.
"""

from __future__ import annotations

import torch
from torch import nn

from genlab.errors import ConfigError
from genlab.models.gpt import GPT


def check_vocab(model_vocab: int, data_vocab: int, resize: bool) -> bool:
    """True when the embeddings must be resized to `data_vocab`; raise when they must be but
    `resize` is off. False when the model can be used as it is."""
    if model_vocab == data_vocab:
        return False
    if resize:
        return True
    if data_vocab > model_vocab:
        raise ConfigError(
            f"the tokenizer has {data_vocab} tokens but the pretrained model only {model_vocab}"
            "; use the model's own tokenizer (data.tokenizer.kind: hf_pretrained) or set "
            "finetune.resize_embeddings: true to add rows for the new tokens"
        )
    return False


def model_vocab_size(model: nn.Module) -> int:
    """Rows of the model's input embedding table."""
    hf = getattr(model, "hf", model)
    if hasattr(hf, "get_input_embeddings"):
        return int(hf.get_input_embeddings().weight.shape[0])
    if isinstance(model, GPT):
        return int(model.wte.weight.shape[0])
    raise ConfigError(
        f"cannot find the vocabulary of {type(model).__name__}; it is neither a genlab GPT nor "
        "a Hugging Face model"
    )


def resize_vocab(model: nn.Module, new_size: int) -> None:
    """Grow or shrink the token embedding (and output head) to `new_size` rows, in place.

    HF: `resize_token_embeddings` (new rows from the old rows' mean and covariance).
    genlab GPT: `resize_gpt_vocab`.
    """
    if new_size < 1:
        raise ConfigError(f"the vocabulary size must be >= 1, got {new_size}")
    hf = getattr(model, "hf", model)
    if hasattr(hf, "resize_token_embeddings"):
        hf.resize_token_embeddings(new_size)
    elif isinstance(model, GPT):
        resize_gpt_vocab(model, new_size)
    else:
        raise ConfigError(
            f"cannot resize the vocabulary of {type(model).__name__}; set "
            "finetune.resize_embeddings: false and use the model's own tokenizer"
        )


def match_vocab(model: nn.Module, data_vocab: int, resize: bool) -> bool:
    """check_vocab + resize_vocab in one call; True if the model was resized."""
    if check_vocab(model_vocab_size(model), data_vocab, resize):
        resize_vocab(model, data_vocab)
        return True
    return False


@torch.no_grad()
def resize_gpt_vocab(model: GPT, new_size: int) -> None:
    """Resize genlab GPT's `wte` (V, C) to (new_size, C), keeping the first min(V, new) rows.

    New rows start at the mean of the old rows: a new token then begins with an average
    logit instead of a random one, which keeps the first steps' loss from jumping. The head
    stays tied to wte if it was; an untied head (see reinit_head) is resized the same way.
    """
    old_wte = model.wte.weight  # (V, C)
    tied = model.lm_head.weight is old_wte
    model.wte = _resized_embedding(model.wte, new_size)
    if tied:
        model.lm_head = nn.Linear(old_wte.shape[1], new_size, bias=False).to(old_wte)
        model.lm_head.weight = model.wte.weight
    else:
        old = model.lm_head
        head = nn.Linear(old.in_features, new_size, bias=old.bias is not None).to(old.weight)
        keep = min(old.out_features, new_size)
        head.weight[:keep] = old.weight[:keep]
        head.weight[keep:] = old.weight.mean(dim=0)
        if old.bias is not None:
            head.bias[:keep] = old.bias[:keep]
            head.bias[keep:] = old.bias.mean()
        model.lm_head = head


def _resized_embedding(old: nn.Embedding, new_size: int) -> nn.Embedding:
    w = old.weight  # (V, C)
    new = nn.Embedding(new_size, w.shape[1]).to(device=w.device, dtype=w.dtype)
    keep = min(w.shape[0], new_size)
    new.weight[:keep] = w[:keep]
    new.weight[keep:] = w.mean(dim=0)
    new.weight.requires_grad_(w.requires_grad)
    return new
