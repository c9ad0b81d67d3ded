"""Bits per byte counts the bytes each target token stands for, for every tokenizer kind,
including tokens that hold part of a UTF-8 character (byte-level BPE splits an emoji into
byte tokens: decoding them one by one gives replacement characters, 3 bytes each)."""

from __future__ import annotations

from pydoc_data.topics import topics

import pytest
import torch

from genlab.data.bpe import BPETokenizer
from genlab.data.tokenizers import ByteTokenizer, CharTokenizer
from genlab.evaluation.text import target_byte_counter

ASCII_TRAIN = [topics[k] for k in sorted(topics)[:20]]  # English text: no emoji, no ß
MIXED = "a 🎉 ß, naïve café — 東京 ✓\nplain ASCII too"


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(ASCII_TRAIN, vocab_size=400)


def test_the_issue_example_counts_nine_bytes(bpe):
    text = "a 🎉 ß"
    ids = bpe.encode(text)
    count = target_byte_counter(bpe)(torch.tensor([ids]))
    assert count == len(text.encode("utf-8")) == 9
    # What per-token decoding counted before: every byte token of 🎉 and ß became U+FFFD.
    assert sum(len(bpe.decode([i]).encode("utf-8")) for i in ids) == 21


@pytest.mark.parametrize("kind", ["byte", "char", "bpe"])
def test_a_stream_of_targets_stands_for_the_text_minus_the_first_token(kind, bpe):
    tok = {"byte": ByteTokenizer(), "char": CharTokenizer.train([MIXED]), "bpe": bpe}[kind]
    ids = tok.encode(MIXED)
    targets = torch.tensor([ids[1:]])  # every token but the first is a target once
    # MIXED starts with an ASCII letter that every tokenizer keeps as one 1-byte token.
    assert tok.decode(ids[:1]) == "a"
    assert target_byte_counter(tok)(targets) == len(MIXED.encode("utf-8")) - 1


def test_windows_that_cut_a_character_still_add_up(bpe):
    ids = bpe.encode(MIXED * 3)
    stream = torch.tensor(ids)
    count = target_byte_counter(bpe)
    # Any cut into windows (here of 5 tokens, cutting multi-byte characters) adds up to the
    # same total: bytes are counted per token, never from a decoded fragment.
    pieces = sum(count(stream[i : i + 5].unsqueeze(0)) for i in range(0, len(ids), 5))
    assert pieces == count(stream.unsqueeze(0)) == len((MIXED * 3).encode("utf-8"))


def test_padding_is_not_counted(bpe):
    ids = bpe.encode("naïve")
    padded = torch.tensor([[*ids, -100, -100]])
    assert target_byte_counter(bpe)(padded) == len("naïve".encode())


def test_a_tokenizer_without_byte_lengths_falls_back_to_decoding_rows():
    class Words:
        kind = "words"
        vocab = ("", "héllo", " ", "wörld")

        def decode(self, ids):
            return "".join(self.vocab[i] for i in ids)

    count = target_byte_counter(Words())
    assert count(torch.tensor([[1, 2, 3], [3, -100, -100]])) == len("héllo wörld".encode()) + 6


def test_a_pretrained_hugging_face_tokenizer_counts_exact_bytes(tmp_path, monkeypatch):
    from genlab.models.hf import load_hf_tokenizer
    from hfkit import make_tiny_hf_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = load_hf_tokenizer(make_tiny_hf_model(tmp_path / "hf", vocab_size=300))
    ids = tok.encode(MIXED)
    assert tok.decode(ids[:1]) == "a"
    assert target_byte_counter(tok)(torch.tensor([ids[1:]])) == len(MIXED.encode("utf-8")) - 1
