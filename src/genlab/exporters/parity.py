"""Parity of an exported model with the genlab model it came from, measured the same way for
every format (the numbers export.json records).

- logits: max |Δlogit| over held-out windows (evenly spaced over the run's validation text,
  tokenized by the run's tokenizer), batches of them at once.
- greedy: 64 new tokens from each of 5 held-out prompts, by genlab's own decoding rule
  (`genlab.models.gpt.sample_tokens` at temperature 0: argmax, the context cut to the model's
  last `block_size` tokens), driven once by each side's logits; identical token ids or not.
- perplexity: genlab's one likelihood (`evaluation.text.score_lm`) over the same windows.
- tokenizer: whether the exported tokenizer gives genlab's ids for held-out text, and decodes
  them back to genlab's text.

A logits function maps token ids (B, T) int64 to logits (B, T, V); every runtime (transformers,
ONNX Runtime, a GGUF read back) is wrapped as one, so the comparison code is shared.
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from genlab.data.prepare import DOC_SEPARATOR
from genlab.errors import DataError
from genlab.evaluation.text import perplexity as text_perplexity
from genlab.evaluation.text import score_lm
from genlab.models.gpt import sample_tokens

LogitsFn = Callable[[torch.Tensor], torch.Tensor]

N_WINDOWS = 8  # held-out windows for the logit comparison
N_PROMPTS = 5
GREEDY_TOKENS = 64
PROMPT_TOKENS = 8  # at most; shorter when the context is short
TOKENIZER_CHARS = 20_000  # held-out characters the tokenizer comparison encodes


@dataclass
class HeldOut:
    """What parity is measured on, drawn once per export from the run's validation split."""

    tokens: np.ndarray  # (N,) the validation text's token ids
    text: str  # the start of the validation text (tokenizer comparison)
    block_size: int  # the model's context: windows and greedy decoding stay within it

    def windows(self, length: int, count: int = N_WINDOWS) -> torch.Tensor:
        """(count', length + 1) evenly spaced windows of the token stream: inputs are
        [:, :-1], next-token targets [:, 1:]. Fewer when the text is short."""
        span = length + 1
        if len(self.tokens) < span:
            raise DataError(
                f"the validation text has {len(self.tokens)} tokens, fewer than one window of "
                f"{span}; raise data.split.val or add documents"
            )
        starts = np.linspace(0, len(self.tokens) - span, count).round().astype(int)
        rows = [self.tokens[s : s + span] for s in dict.fromkeys(starts.tolist())]
        return torch.from_numpy(np.stack(rows).astype(np.int64))

    def prompts(self, count: int = N_PROMPTS) -> list[list[int]]:
        """`count` prompts of PROMPT_TOKENS ids (fewer when the context is shorter), taken at
        evenly spaced places of the validation text."""
        length = max(1, min(PROMPT_TOKENS, self.block_size // 2))
        return [row[:length].tolist() for row in self.windows(length, count)]


def held_out(loaded: Any) -> HeldOut:
    """The run's validation text, tokenized (a `genlab.evaluation.run.LoadedRun`)."""
    from genlab.evaluation.run import held_out_documents

    docs = held_out_documents(loaded.cfg, "val", loaded.run.root)
    text = DOC_SEPARATOR.join(d.text for d in docs)
    tokens = np.asarray(loaded.tokenizer.encode(text), dtype=np.int64)
    return HeldOut(tokens, text[:TOKENIZER_CHARS], context_length(loaded.model))


def context_length(model: torch.nn.Module) -> int:
    """The longest input the model takes: GPT's position table, an HF model's block size."""
    return int(model.block_size)


@torch.no_grad()
def max_abs_logit_diff(
    reference: LogitsFn, candidate: LogitsFn, inputs: torch.Tensor, batch_size: int = 2
) -> float:
    """max |reference(x) - candidate(x)| over the rows of `inputs` (B, T), in fp32, a few rows
    at a time (a (B, T, V) logits tensor of a large vocabulary is big)."""
    worst = 0.0
    for i in range(0, len(inputs), batch_size):
        x = inputs[i : i + batch_size]
        diff = (reference(x).float() - candidate(x).float()).abs().max().item()
        worst = max(worst, diff if math.isfinite(diff) else math.inf)
    return worst


@torch.no_grad()
def greedy(logits_fn: LogitsFn, prompts: Sequence[Sequence[int]], block_size: int) -> list:
    """GREEDY_TOKENS new ids after each prompt, by genlab's decoding rule (module doc)."""
    out = []
    for prompt in prompts:
        idx = torch.tensor([list(prompt)], dtype=torch.long)
        ids = sample_tokens(logits_fn, idx, block_size, GREEDY_TOKENS, temperature=0.0)
        out.append(ids[0, len(prompt) :].tolist())
    return out


def first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    """The first index where two id sequences differ (a length difference counts); None when
    they are equal."""
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    if at is None and len(a) != len(b):
        at = min(len(a), len(b))
    return at


def greedy_report(
    reference: list[list[int]], candidate: list[list[int]], decode: Callable[[list[int]], str]
) -> dict[str, Any]:
    """Whether the greedy continuations agree, where they part, and the reference texts."""
    first_diff = [first_difference(r, c) for r, c in zip(reference, candidate, strict=True)]
    return {
        "prompts": len(reference),
        "new_tokens": GREEDY_TOKENS,
        "identical": all(d is None for d in first_diff),
        "identical_prompts": sum(d is None for d in first_diff),
        "first_difference_at": first_diff,
        "reference_texts": [decode(r) for r in reference],
    }


@torch.no_grad()
def perplexity(logits_fn: LogitsFn, windows: torch.Tensor, batch_size: int = 2) -> float:
    """Perplexity of `windows` (B, T+1) under the model, through genlab's one likelihood
    (`score_lm`: a token-level mean, the same number `genlab eval` reports)."""
    chunks = (windows[i : i + batch_size] for i in range(0, len(windows), batch_size))
    score = score_lm(logits_fn, ((w[:, :-1], w[:, 1:]) for w in chunks), lambda t: 0)
    return text_perplexity(score.nll_sum, score.tokens)


def tokenizer_report(
    genlab_tokenizer: Any,
    encode: Callable[[str], list[int]],
    decode: Callable[[list[int]], str],
    text: str,
) -> dict[str, Any]:
    """Do the exported tokenizer's ids (and decoded text) equal genlab's on `text`?"""
    expected = genlab_tokenizer.encode(text)
    at = first_difference(expected, list(encode(text)))
    return {
        "characters": len(text),
        "tokens": len(expected),
        "identical_ids": at is None,
        "first_difference_at": at,
        "identical_decode": decode(expected) == genlab_tokenizer.decode(expected),
    }


@contextlib.contextmanager
def quiet_transformers(progress_bars: bool = False) -> Iterator[None]:
    """transformers' warnings (long-input notices, config defaults) off while an export loads
    and runs what it wrote, restored afterwards; with `progress_bars`, stderr is captured too
    (its GGUF loader draws a bar of its own)."""
    transformers = sys.modules.get("transformers")
    if transformers is None:
        yield
        return
    logging = transformers.utils.logging
    before = logging.get_verbosity()
    logging.set_verbosity_error()
    capture = (
        contextlib.redirect_stderr(io.StringIO()) if progress_bars else contextlib.nullcontext()
    )
    try:
        with warnings.catch_warnings(), capture:
            warnings.simplefilter("ignore", FutureWarning)  # deprecations inside the libraries
            yield
    finally:
        logging.set_verbosity(before)


def goal(value: float | bool, limit: float | bool, unit: str = "<=") -> dict[str, Any]:
    """One parity goal: the measured value, the limit and whether it is met."""
    met = value == limit if unit == "==" else (math.isfinite(value) and value <= limit)
    return {"value": value, "limit": limit, "rule": unit, "met": bool(met)}


def all_met(goals: dict[str, dict[str, Any]]) -> bool:
    return all(g["met"] for g in goals.values())


__all__ = [
    "GREEDY_TOKENS",
    "N_PROMPTS",
    "HeldOut",
    "LogitsFn",
    "all_met",
    "context_length",
    "goal",
    "greedy",
    "greedy_report",
    "held_out",
    "max_abs_logit_diff",
    "perplexity",
    "quiet_transformers",
    "tokenizer_report",
]
