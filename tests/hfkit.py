"""A tiny local Hugging Face model for tests: GPT-2 plus a byte-level BPE tokenizer, saved the
way `save_pretrained` saves a model downloaded from the Hub (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch

from genlab.models.hf import transformers_offline


def make_tiny_hf_model(
    directory: str | Path,
    vocab_size: int = 320,
    n_layer: int = 2,
    n_embd: int = 32,
    n_head: int = 2,
    n_positions: int = 64,
    seed: int = 0,
    dropout: float = 0.1,
) -> Path:
    """Build and save a TINY GPT-2 and its tokenizer into `directory`; returns the directory,
    ready for `model.family: hf` with `finetune.init_from=<directory>`.

    The tokenizer is trained here on a few KB of CPython's own `pydoc_data.topics` text.
    """
    from pydoc_data.topics import topics

    from genlab.data.bpe import END_OF_TEXT, BPETokenizer

    transformers = transformers_offline()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    texts = [topics[k] for k in sorted(topics)[:12]]  # a few KB, deterministic
    bpe = BPETokenizer.train(texts, vocab_size=vocab_size, min_frequency=2)
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe.hf, eos_token=END_OF_TEXT, bos_token=END_OF_TEXT
    )
    tok.save_pretrained(str(directory))
    config = transformers.GPT2Config(
        vocab_size=len(tok),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=bpe.eot_id,
        eos_token_id=bpe.eot_id,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
    )
    torch.manual_seed(seed)
    transformers.GPT2LMHeadModel(config).save_pretrained(str(directory))
    return directory
