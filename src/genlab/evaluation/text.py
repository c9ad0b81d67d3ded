"""Text metrics: token NLL, perplexity, bits per byte, BLEU and chrF, continuation prompts.

`score_lm` is the one likelihood loop (training-time evaluation and `genlab eval` both call
it) and `LikelihoodScore` the one place loss, perplexity and bits per byte are derived.

Perplexity is ONE token-level mean over every non-padded target of the split,
exp(sum NLL / n_tokens), never a mean of per-sequence perplexities (that would weight short
sequences more and is not what papers report). Bits per byte divides the same NLL sum by the
UTF-8 byte count of the target text, so models with byte, char or BPE tokenizers can be
compared on one scale.

BLEU and chrF go through sacrebleu (imported lazily: it is the `eval` extra), and every result
carries sacrebleu's signature string so scores are only compared when computed the same way.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from genlab.errors import ConfigError, DataError, require
from genlab.evaluation.result import MetricResult

__all__ = [
    "LikelihoodScore",
    "bits_per_byte",
    "continuation_pairs",
    "corpus_bleu",
    "corpus_chrf",
    "perplexity",
    "score_lm",
    "sentence_bleu",
    "sentence_chrf",
    "target_byte_counter",
    "token_nll",
    "utf8_byte_count",
]


# --------------------------------------------------------------------------- likelihood


def token_nll(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100
) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) of `targets` under `logits`, and the target count.

    logits: (B, T, V) unnormalised scores; targets: (B, T) token ids, `ignore_index` marks
    padding. Returns (nll_sum, n_tokens) so callers can accumulate over batches and take one
    mean at the end. Per-token losses are computed in float32 (bf16/fp16 logits are upcast)
    and summed in float64, so long evaluations do not lose precision.
    """
    if logits.dim() != 3 or targets.dim() != 2 or logits.shape[:2] != targets.shape:
        raise DataError(
            f"token_nll needs logits (B, T, V) and targets (B, T) with the same B and T, "
            f"got logits {tuple(logits.shape)} and targets {tuple(targets.shape)}; "
            f"pass the model's logits for exactly the target positions"
        )
    vocab = logits.shape[-1]
    flat_targets = targets.reshape(-1).long()  # (B*T,)
    mask = flat_targets != ignore_index
    n_tokens = int(mask.sum())
    if n_tokens == 0:
        return 0.0, 0
    kept = flat_targets[mask]
    if int(kept.min()) < 0 or int(kept.max()) >= vocab:
        raise DataError(
            f"target ids must lie in [0, {vocab}) (the logits' vocabulary) or equal "
            f"ignore_index={ignore_index}, got ids from {int(kept.min())} to {int(kept.max())}; "
            f"check the tokenizer matches the model and the padding id"
        )
    losses = F.cross_entropy(
        logits.reshape(-1, vocab).float(), flat_targets, ignore_index=ignore_index, reduction="none"
    )  # (B*T,), 0 at ignored positions
    return float(losses.double().sum()), n_tokens


def _check_count(value: int, what: str) -> None:
    if value <= 0:
        raise DataError(
            f"{what} must be positive, got {value}; evaluate on a split with at least one "
            f"non-padded target"
        )


def perplexity(nll_sum: float, n_tokens: int) -> float:
    """exp(nll_sum / n_tokens): the token-level mean over all non-padded targets.
    Returns inf (not an OverflowError) when the mean NLL is too large to exponentiate."""
    _check_count(n_tokens, "n_tokens")
    mean = nll_sum / n_tokens
    try:
        return math.exp(mean)
    except OverflowError:
        return math.inf


def bits_per_byte(nll_sum_nats: float, n_bytes: int) -> float:
    """nll_sum / (ln 2 * n_bytes), with n_bytes the UTF-8 byte count of the target text.

    Tokenizer-independent: the same text costs the same bits whether it was cut into bytes,
    characters or BPE pieces."""
    _check_count(n_bytes, "n_bytes")
    return nll_sum_nats / (math.log(2) * n_bytes)


def utf8_byte_count(texts: str | Iterable[str]) -> int:
    """Number of UTF-8 bytes in a text or in a sequence of texts (the bits_per_byte unit)."""
    if isinstance(texts, str):
        return len(texts.encode("utf-8"))
    return sum(len(t.encode("utf-8")) for t in texts)


@dataclass(frozen=True)
class LikelihoodScore:
    """A model's summed NLL (nats) over `tokens` target tokens that stand for `bytes` UTF-8
    bytes of text. Every perplexity, NLL and bits-per-byte genlab reports (training-time
    evaluation, `genlab eval`, robustness, compression tables) is derived here."""

    nll_sum: float
    tokens: int
    bytes: int

    def metrics(self) -> dict[str, float]:
        """Flat numbers for metrics.jsonl: loss (mean nats per token), perplexity,
        bits_per_byte, and the tokens and bytes they were measured on."""
        _check_count(self.tokens, "n_tokens")
        return {
            "loss": self.nll_sum / self.tokens,
            "perplexity": perplexity(self.nll_sum, self.tokens),
            "bits_per_byte": bits_per_byte(self.nll_sum, self.bytes),
            "tokens": self.tokens,
            "bytes": self.bytes,
        }

    def results(
        self, split: str | None = None, details: dict[str, Any] | None = None
    ) -> dict[str, MetricResult]:
        """The same numbers as MetricResults (perplexity, nll, bits_per_byte) for metrics.json;
        n is the token count, details record the bytes and the NLL sum."""
        m = self.metrics()
        extra = {
            "unit": "token",
            "nll_sum_nats": self.nll_sum,
            "n_bytes": self.bytes,
            **(details or {}),
        }
        return {
            "perplexity": MetricResult("perplexity", m["perplexity"], self.tokens, split, extra),
            "nll": MetricResult("nll", m["loss"], self.tokens, split, dict(extra)),
            "bits_per_byte": MetricResult(
                "bits_per_byte", m["bits_per_byte"], self.tokens, split, dict(extra)
            ),
        }


ByteCounter = Callable[[torch.Tensor], int]


def target_byte_counter(tokenizer: Any, ignore_index: int = -100) -> ByteCounter:
    """counter(targets (B, T)) -> the UTF-8 bytes those target tokens stand for.

    Exact where the tokenizer knows each token's raw bytes (`byte_lengths()`: byte, char and
    byte-level BPE tokenizers, so a token holding part of a UTF-8 character counts the bytes
    it holds, not a replacement character); otherwise the bytes of each row's decoded text."""
    table = tokenizer.byte_lengths() if hasattr(tokenizer, "byte_lengths") else None
    if table is not None:
        lengths = torch.as_tensor(table, dtype=torch.int64)  # (V,)

        def by_table(targets: torch.Tensor) -> int:
            kept = targets[targets != ignore_index].cpu()
            return int(lengths[kept].sum())

        return by_table

    def by_decoding(targets: torch.Tensor) -> int:
        rows = [[int(t) for t in row if t != ignore_index] for row in targets.tolist()]
        return sum(utf8_byte_count(tokenizer.decode(r)) for r in rows if r)

    return by_decoding


def score_lm(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    count_bytes: ByteCounter,
    *,
    autocast: contextlib.AbstractContextManager | None = None,
    ignore_index: int = -100,
) -> LikelihoodScore:
    """Score a language model over (inputs, targets) batches: one token-level sum of NLL over
    every non-padded target, and the bytes they stand for.

    logits_fn maps inputs (B, T) to logits (B, T, V); if it is an nn.Module it is put in eval
    mode for the loop (dropout off) and restored afterwards. `autocast` wraps each forward
    (bf16 on CPU, for instance); the NLL itself is computed in float32 and summed in float64.
    """
    module = logits_fn if isinstance(logits_fn, torch.nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    nll_sum, n_tokens, n_bytes = 0.0, 0, 0
    try:
        with torch.no_grad():
            for inputs, targets in batches:
                with autocast if autocast is not None else contextlib.nullcontext():
                    logits = logits_fn(inputs)
                batch_nll, batch_n = token_nll(logits, targets, ignore_index)
                nll_sum += batch_nll
                n_tokens += batch_n
                n_bytes += count_bytes(targets)
    finally:
        if module is not None:
            module.train(was_training)
    if n_tokens == 0:
        raise DataError(
            "the evaluation batches held 0 non-padded targets; check the split is not empty "
            f"and that targets are not all ignore_index={ignore_index}"
        )
    return LikelihoodScore(nll_sum, n_tokens, n_bytes)


# --------------------------------------------------------------------------- BLEU / chrF


def _check_hyps(hyps: Sequence[str]) -> list[str]:
    if isinstance(hyps, str) or not all(isinstance(h, str) for h in hyps):
        raise DataError(
            f"hypotheses must be a list of strings, got {type(hyps).__name__}; "
            f"pass one generated string per example"
        )
    if len(hyps) == 0:
        raise DataError("got 0 hypotheses; pass at least one generated string")
    return list(hyps)


def _reference_streams(hyps: list[str], refs: Sequence[str] | Sequence[Sequence[str]]):
    """sacrebleu wants reference *streams*: refs[k][i] is the k-th reference of hypothesis i.
    A flat list of strings means one reference per hypothesis, i.e. a single stream."""
    if isinstance(refs, str) or len(refs) == 0:
        raise DataError(
            f"references must be a non-empty list, got {refs!r:.60}; pass one reference string "
            f"per hypothesis, or a list of reference streams"
        )
    streams = [list(refs)] if all(isinstance(r, str) for r in refs) else [list(s) for s in refs]
    for k, stream in enumerate(streams):
        if len(stream) != len(hyps) or not all(isinstance(r, str) for r in stream):
            raise DataError(
                f"reference stream {k} has {len(stream)} entries but there are {len(hyps)} "
                f"hypotheses; give every stream exactly one reference string per hypothesis"
            )
    return streams


def _sentence_refs(ref: str | Sequence[str]) -> list[str]:
    refs = [ref] if isinstance(ref, str) else list(ref)
    if not refs or not all(isinstance(r, str) for r in refs):
        raise DataError(
            f"a sentence score needs one reference string or a non-empty list of them, "
            f"got {ref!r:.60}; pass the reference text"
        )
    return refs


def _bleu_result(name: str, metric: Any, score: Any, n: int, split: str | None) -> MetricResult:
    details = {
        "signature": str(metric.get_signature()),
        "tokenize": metric.tokenizer.signature() if hasattr(metric, "tokenizer") else None,
        "smooth_method": metric.smooth_method,
        "smooth_value": metric.smooth_value,
        "lowercase": metric.lowercase,
        "effective_order": metric.effective_order,
        "precisions": [float(p) for p in score.precisions],
        "brevity_penalty": float(score.bp),
        "hyp_len": int(score.sys_len),
        "ref_len": int(score.ref_len),
    }
    return MetricResult(name, float(score.score), n, split, details)


def _make_bleu(tokenize: str | None, smooth_method: str, lowercase: bool, effective_order: bool):
    metrics = require("sacrebleu.metrics", "eval")
    try:
        return metrics.BLEU(
            tokenize=tokenize,
            smooth_method=smooth_method,
            lowercase=lowercase,
            effective_order=effective_order,
        )
    except (ValueError, KeyError, AssertionError) as exc:  # sacrebleu's own validation
        raise ConfigError(
            f"invalid BLEU settings tokenize={tokenize!r}, smooth_method={smooth_method!r}: "
            f"{exc}; use sacrebleu's names (tokenize '13a', 'intl', 'char', ...; "
            f"smooth_method 'exp', 'floor', 'add-k', 'none')"
        ) from exc


def corpus_bleu(
    hyps: Sequence[str],
    refs: Sequence[str] | Sequence[Sequence[str]],
    *,
    tokenize: str | None = None,
    smooth_method: str = "exp",
    lowercase: bool = False,
    split: str | None = None,
) -> MetricResult:
    """Corpus BLEU (0-100) through sacrebleu. refs: reference streams (refs[k][i] is the k-th
    reference of hyps[i]) or a list of strings, one reference per hypothesis."""
    hyps = _check_hyps(hyps)
    streams = _reference_streams(hyps, refs)
    bleu = _make_bleu(tokenize, smooth_method, lowercase, effective_order=False)
    return _bleu_result("bleu", bleu, bleu.corpus_score(hyps, streams), len(hyps), split)


def sentence_bleu(
    hyp: str,
    ref: str | Sequence[str],
    *,
    tokenize: str | None = None,
    smooth_method: str = "exp",
    lowercase: bool = False,
) -> MetricResult:
    """Sentence BLEU (0-100) of one hypothesis against one or more references. Uses
    effective order, as sacrebleu recommends, so short sentences without 4-gram matches do
    not collapse to 0."""
    _check_hyps([hyp])
    refs = _sentence_refs(ref)
    bleu = _make_bleu(tokenize, smooth_method, lowercase, effective_order=True)
    return _bleu_result("sentence_bleu", bleu, bleu.sentence_score(hyp, refs), 1, None)


def _make_chrf(char_order: int, word_order: int, beta: int, lowercase: bool):
    metrics = require("sacrebleu.metrics", "eval")
    if char_order < 1 or word_order < 0 or beta < 1:
        raise ConfigError(
            f"chrF needs char_order >= 1, word_order >= 0, beta >= 1, got char_order="
            f"{char_order}, word_order={word_order}, beta={beta}; the defaults are 6, 0, 2 "
            f"(word_order=2 gives chrF++)"
        )
    return metrics.CHRF(
        char_order=char_order, word_order=word_order, beta=beta, lowercase=lowercase
    )


def _chrf_result(name: str, metric: Any, score: Any, n: int, split: str | None) -> MetricResult:
    details = {
        "signature": str(metric.get_signature()),
        "char_order": metric.char_order,
        "word_order": metric.word_order,
        "beta": metric.beta,
        "lowercase": metric.lowercase,
        "whitespace": metric.whitespace,
    }
    return MetricResult(name, float(score.score), n, split, details)


def corpus_chrf(
    hyps: Sequence[str],
    refs: Sequence[str] | Sequence[Sequence[str]],
    *,
    char_order: int = 6,
    word_order: int = 0,
    beta: int = 2,
    lowercase: bool = False,
    split: str | None = None,
) -> MetricResult:
    """Corpus chrF (0-100) through sacrebleu; refs as for `corpus_bleu`."""
    hyps = _check_hyps(hyps)
    streams = _reference_streams(hyps, refs)
    chrf = _make_chrf(char_order, word_order, beta, lowercase)
    return _chrf_result("chrf", chrf, chrf.corpus_score(hyps, streams), len(hyps), split)


def sentence_chrf(
    hyp: str,
    ref: str | Sequence[str],
    *,
    char_order: int = 6,
    word_order: int = 0,
    beta: int = 2,
    lowercase: bool = False,
) -> MetricResult:
    """Sentence chrF (0-100) of one hypothesis against one or more references."""
    _check_hyps([hyp])
    refs = _sentence_refs(ref)
    chrf = _make_chrf(char_order, word_order, beta, lowercase)
    return _chrf_result("sentence_chrf", chrf, chrf.sentence_score(hyp, refs), 1, None)


# --------------------------------------------------------------------------- continuation


def continuation_pairs(
    documents: Sequence[str], prompt_chars: int, continuation_chars: int
) -> list[tuple[str, str]]:
    """(prompt, reference) pairs from held-out documents: the first `prompt_chars` characters
    prompt the model, the next `continuation_chars` are the true continuation to compare its
    output with (BLEU/chrF). Documents shorter than prompt_chars + continuation_chars are
    skipped; if none is long enough, that is an error rather than an empty, meaningless score.
    """
    if prompt_chars < 1 or continuation_chars < 1:
        raise ConfigError(
            f"prompt_chars and continuation_chars must be >= 1, got {prompt_chars} and "
            f"{continuation_chars}; choose lengths such as 200 and 100"
        )
    need = prompt_chars + continuation_chars
    pairs = [
        (doc[:prompt_chars], doc[prompt_chars:need])
        for doc in documents
        if isinstance(doc, str) and len(doc) >= need
    ]
    if not pairs:
        longest = max((len(d) for d in documents if isinstance(d, str)), default=0)
        raise DataError(
            f"no document has prompt_chars + continuation_chars = {need} characters "
            f"({len(documents)} documents, longest {longest}); lower prompt_chars or "
            f"continuation_chars"
        )
    return pairs
