"""Generate text from a trained run."""

from __future__ import annotations

from pathlib import Path

import torch

from genlab.data.prepare import DOC_SEPARATOR
from genlab.errors import ConfigError

MAX_NEW_TOKENS = 100_000  # a bound so a typo cannot start an hours-long generation


def generate(
    run_dir: str | Path,
    prompt: str | None = None,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 50,
    top_p: float | None = None,
    seed: int = 0,
    checkpoint: str | Path | None = None,
) -> str:
    """Sample a continuation of `prompt` from the run's last checkpoint (or `checkpoint`),
    with the EMA weights when the run kept them; the prompt and its continuation come back.
    Without a prompt the model starts a new document (after the separator that precedes
    every document in training) and only the document it writes comes back, so the text
    starts where a document starts instead of with the whitespace a bare newline invites."""
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise ConfigError(
            f"--max-new-tokens must be in [1, {MAX_NEW_TOKENS:,}], got {max_new_tokens}; "
            "use e.g. 200"
        )
    if not 0 <= temperature <= 100:  # written this way round, NaN fails it too
        raise ConfigError(f"--temperature must be in [0, 100], got {temperature}; use e.g. 0.8")
    if top_k is not None and top_k < 0:
        raise ConfigError(f"--top-k must be >= 0 (0: no top-k filter), got {top_k}; use e.g. 50")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"--top-p must be in (0, 1], got {top_p}; use e.g. 0.9")
    if not 0 <= seed < 2**63:
        raise ConfigError(f"--seed must be in [0, 2**63), got {seed}; use e.g. 0")
    from genlab.evaluation.run import load_run_model

    loaded = load_run_model(run_dir, checkpoint, device="cpu")
    tokenizer = loaded.tokenizer
    ids = tokenizer.encode(DOC_SEPARATOR if prompt is None else prompt)
    ids = ids or tokenizer.encode(DOC_SEPARATOR)  # a prompt that encodes to nothing
    idx = torch.tensor([ids], dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    out = loaded.model.generate(idx, max_new_tokens, temperature, top_k, top_p, generator=g)
    keep = len(ids) if prompt is None else 0  # no prompt: the new document alone
    return tokenizer.decode(out[0].tolist()[keep:])
