"""Text metrics: published sacrebleu values through genlab's wrappers, perplexity and
bits-per-byte against hand computations, input validation."""

from __future__ import annotations

import json
import math

import pytest
import torch
from sacrebleu.metrics import BLEU, CHRF

from genlab.errors import ConfigError, DataError
from genlab.evaluation import (
    MetricResult,
    bits_per_byte,
    continuation_pairs,
    corpus_bleu,
    corpus_chrf,
    perplexity,
    score_lm,
    sentence_bleu,
    sentence_chrf,
    token_nll,
    utf8_byte_count,
)

# sacrebleu's README example (published: BLEU = 48.53).
HYPS = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
REFS = [
    ["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
    ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."],
]


def test_corpus_bleu_published_value_and_signature():
    res = corpus_bleu(HYPS, REFS, split="test")
    assert res.value == pytest.approx(48.530827, abs=1e-6)
    assert res.name == "bleu" and res.n == 3 and res.split == "test"
    sig = res.details["signature"]
    assert "nrefs:2" in sig and "tok:13a" in sig and "smooth:exp" in sig
    assert res.details["tokenize"] == "13a" and res.details["smooth_method"] == "exp"
    json.dumps(res.to_dict())  # metrics.json must accept it


def test_corpus_chrf_equals_sacrebleu():
    ours = corpus_chrf(HYPS, REFS)
    chrf = CHRF()
    theirs = chrf.corpus_score(HYPS, REFS)
    assert ours.value == pytest.approx(theirs.score, abs=1e-12)
    assert ours.details["signature"] == str(chrf.get_signature())
    plus = corpus_chrf(HYPS, REFS, word_order=2)  # chrF++ is a different number
    assert plus.value == pytest.approx(CHRF(word_order=2).corpus_score(HYPS, REFS).score)


def test_flat_reference_list_is_one_stream():
    assert corpus_bleu(HYPS, REFS[0]).value == pytest.approx(
        BLEU().corpus_score(HYPS, [REFS[0]]).score
    )
    assert corpus_bleu(HYPS, REFS[0]).value != pytest.approx(corpus_bleu(HYPS, REFS).value)


def test_sentence_scores_match_sacrebleu():
    hyp, refs = HYPS[2], [REFS[0][2], REFS[1][2]]
    assert sentence_bleu(hyp, refs).value == pytest.approx(
        BLEU(effective_order=True).sentence_score(hyp, refs).score
    )
    assert sentence_chrf(hyp, refs[0]).value == pytest.approx(
        CHRF().sentence_score(hyp, [refs[0]]).score
    )
    assert sentence_bleu(HYPS[0], REFS[0][0]).value == pytest.approx(100.0)


def test_bleu_input_validation():
    with pytest.raises(DataError, match="3 hypotheses") as exc:
        corpus_bleu(HYPS, [REFS[0][:2]])
    assert "\n" not in str(exc.value)
    with pytest.raises(DataError):
        corpus_chrf(HYPS, REFS[0][:2])
    with pytest.raises(DataError):
        corpus_bleu([], [])
    with pytest.raises(DataError):
        corpus_bleu("a single string", ["x"])
    with pytest.raises(ConfigError):
        corpus_bleu(HYPS, REFS, tokenize="no-such-tokenizer")


def _hand_nll(logits: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """Per non-padded target NLL computed independently, in float64."""
    logp = logits.double().log_softmax(dim=-1)
    return [
        -float(logp[b, t, targets[b, t]])
        for b in range(targets.shape[0])
        for t in range(targets.shape[1])
        if targets[b, t] != -100
    ]


def test_perplexity_is_one_token_level_mean_with_padding_ignored():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=g) * 3
    targets = torch.randint(0, 7, (3, 5), generator=g)
    targets[0, 3:] = -100  # sequences of lengths 3, 5, 1
    targets[2, 1:] = -100
    nll_sum, n = token_nll(logits, targets)
    per_token = _hand_nll(logits, targets)
    assert n == len(per_token) == 9
    assert nll_sum == pytest.approx(sum(per_token), rel=1e-6)
    assert perplexity(nll_sum, n) == pytest.approx(math.exp(sum(per_token) / 9), rel=1e-6)
    # Not the mean of per-sequence perplexities (that would weight short sequences more).
    lengths, seq_ppl, start = [3, 5, 1], [], 0
    for length in lengths:
        seq_ppl.append(math.exp(sum(per_token[start : start + length]) / length))
        start += length
    assert perplexity(nll_sum, n) != pytest.approx(sum(seq_ppl) / 3, rel=1e-3)


def test_bits_per_byte_hand_case():
    # 12 bits (in nats) over the 6 UTF-8 bytes of "héllo" is exactly 2 bits per byte.
    assert utf8_byte_count("héllo") == 6  # é is 2 bytes in UTF-8
    assert utf8_byte_count(["ab", "€"]) == 5
    assert bits_per_byte(12 * math.log(2), 6) == pytest.approx(2.0)
    assert bits_per_byte(3.0, 4) == pytest.approx(3.0 / (math.log(2) * 4))
    with pytest.raises(DataError):
        bits_per_byte(1.0, 0)
    with pytest.raises(DataError):
        perplexity(1.0, 0)
    assert perplexity(1e6, 1) == math.inf


def test_token_nll_validation():
    with pytest.raises(DataError, match="same B and T"):
        token_nll(torch.zeros(2, 4, 5), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(DataError, match=r"\[0, 5\)"):
        token_nll(torch.zeros(1, 2, 5), torch.tensor([[1, 9]]))
    assert token_nll(torch.zeros(1, 2, 5), torch.full((1, 2), -100)) == (0.0, 0)


class _TinyLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(11, 8)
        self.drop = torch.nn.Dropout(0.5)
        self.out = torch.nn.Linear(8, 11)

    def forward(self, ids):  # (B, T) -> (B, T, V)
        return self.out(self.drop(self.emb(ids)))


def test_score_lm_loop_eval_mode_and_results():
    torch.manual_seed(0)
    model = _TinyLM().train()
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(3):
        ids = torch.randint(0, 11, (2, 6), generator=g)
        targets = torch.randint(0, 11, (2, 6), generator=g)
        targets[1, 4:] = -100
        batches.append((ids, targets))
    # 2 bytes per target token, counted on the non-padded targets only.
    score = score_lm(model, batches, lambda t: 2 * int((t != -100).sum()))
    results = score.results(split="val")
    assert model.training  # restored after the loop
    model.eval()
    with torch.no_grad():
        per_token = [x for ids, t in batches for x in _hand_nll(model(ids), t)]
    mean = sum(per_token) / len(per_token)
    assert set(results) == {"perplexity", "nll", "bits_per_byte"}
    assert all(isinstance(r, MetricResult) and r.split == "val" for r in results.values())
    assert results["nll"].n == len(per_token) == 30
    assert results["nll"].value == pytest.approx(mean, rel=1e-6)
    assert results["perplexity"].value == pytest.approx(math.exp(mean), rel=1e-6)
    assert score.bytes == 60 and results["bits_per_byte"].details["n_bytes"] == 60
    assert results["bits_per_byte"].value == pytest.approx(
        sum(per_token) / (math.log(2) * 60), rel=1e-6
    )
    flat = score.metrics()
    assert flat["loss"] == pytest.approx(mean, rel=1e-6) and flat["tokens"] == 30
    with pytest.raises(DataError):
        score_lm(model, [], lambda t: 0)


def test_continuation_pairs():
    docs = ["abcdefghij", "short", "0123456789XYZ"]
    assert continuation_pairs(docs, 4, 3) == [("abcd", "efg"), ("0123", "456")]
    with pytest.raises(DataError, match="longest 13"):
        continuation_pairs(docs, 10, 10)
    with pytest.raises(ConfigError):
        continuation_pairs(docs, 0, 3)


def test_metric_result_to_dict_and_frozen():
    r = MetricResult("fid", float("nan"), 10, details={"extractor": "x"})
    d = r.to_dict()
    assert d == {
        "name": "fid",
        "value": "nan",
        "n": 10,
        "split": None,
        "details": {"extractor": "x"},
    }
    json.dumps(d, allow_nan=False)
    with pytest.raises(AttributeError):
        r.value = 1.0  # type: ignore[misc]
    assert MetricResult("a", 1.0, 1).details == {}
