"""Byte-level BPE: round-trips any text, learns from train only, saves and reloads."""

from __future__ import annotations

import json
import random
import sys

import numpy as np
import pytest

from genlab.data.bpe import BPE_FILE, END_OF_TEXT, BPETokenizer, HFTokenizer, training_sample
from genlab.data.tokenizers import TOKENIZER_FILE, Tokenizer, load_tokenizer
from genlab.errors import ConfigError, DataError, MissingDependencyError

TRAIN = ["def parse(source):\n    return tokens of the source file\n"] * 40 + [
    "The interpreter reads the module and executes each statement in order."
] * 40
VAL_ONLY = "zyxqwvutz"


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer.train(TRAIN, vocab_size=400)


@pytest.mark.parametrize(
    "text",
    [
        "def parse(source):",
        "  indented\n\ttabs\r\n",
        "émoji 🎉 中文 ñ",
        "",
        "<|endoftext|>",
        VAL_ONLY,
    ],
)
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_trained_on_train_only(tok):
    vocab = tok.hf.get_vocab()
    assert any(len(t) > 4 for t in vocab)  # merges were learned from the train text
    assert "Ġinterpreter" in vocab or "interpreter" in vocab
    assert not any(VAL_ONLY in t for t in vocab)
    assert len(tok.encode(VAL_ONLY)) > 1
    # Control: training on text that includes the val-only word does merge it.
    with_val = BPETokenizer.train(TRAIN + [VAL_ONLY + " "] * 200, vocab_size=400)
    assert any(VAL_ONLY in t for t in with_val.hf.get_vocab())


def test_protocol_save_and_load(tok, tmp_path):
    assert isinstance(tok, Tokenizer) and tok.kind == "bpe"
    assert tok.eot_id is not None and tok.vocab_size <= 400
    tok.save(tmp_path)
    assert json.loads((tmp_path / TOKENIZER_FILE).read_text())["kind"] == "bpe"
    assert (tmp_path / BPE_FILE).is_file()
    loaded = load_tokenizer(tmp_path)
    assert loaded.kind == "bpe" and loaded.encode(TRAIN[0]) == tok.encode(TRAIN[0])
    assert loaded.vocab_size == tok.vocab_size


def test_hf_tokenizer_from_local_directory(tok, tmp_path):
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    tok.hf.save(str(hf_dir / "tokenizer.json"))  # what a Hugging Face model directory holds
    hf = HFTokenizer.from_local(hf_dir)
    assert hf.kind == "hf" and hf.encode("return tokens") == tok.encode("return tokens")
    hf.save(tmp_path / "saved")
    again = load_tokenizer(tmp_path / "saved")
    assert again.kind == "hf" and again.decode(again.encode("a é 🎉")) == "a é 🎉"


def test_hf_tokenizer_errors(tok, tmp_path):
    with pytest.raises(DataError, match=r"tokenizer\.json"):
        HFTokenizer.from_local(tmp_path)
    tok.save(tmp_path / "genlab")  # genlab's own tokenizer.json is not an HF one
    with pytest.raises(DataError, match="genlab tokenizer"):
        HFTokenizer.from_local(tmp_path / "genlab")


def test_bad_vocab_size_and_missing_dependency(monkeypatch):
    with pytest.raises(ConfigError, match="vocab_size"):
        BPETokenizer.train(["x"], vocab_size=100)
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(MissingDependencyError, match="tokenizers"):
        BPETokenizer.train(["x"], vocab_size=1000)


ASCII_PIECES = ["word", "Word", " ", "  ", "\t", "\n", "\r\n", "'s", "'", "12", ".", ",", "(",
                "\x00", "\x1c", "\x1f", "\x7f", "\x0b", "_x", "-", "~", "y" * 70]  # fmt: skip
OTHER_PIECES = ["é", "日本語", "\xa0", "\u3000", "\u180e", "\u200b", "🙂", END_OF_TEXT]


@pytest.mark.parametrize("pieces", [ASCII_PIECES, ASCII_PIECES + OTHER_PIECES],
                         ids=["ascii", "any"])  # fmt: skip
def test_chunked_encode_batch_equals_the_library_encoding(pieces):
    """encode_batch cuts texts at spaces and remembers chunks; the ids must be those of the
    library's own encode, for whitespace runs, odd spaces, control characters,
    contractions, digits, other scripts, long runs and the special token, twice (the
    second time from the cache)."""
    rng = random.Random(5)
    tok = BPETokenizer.train([_prose(rng) for _ in range(40)], vocab_size=400)
    assert tok.chunked
    texts = ["", " lead", "trail ", *(_prose(rng) for _ in range(3))]
    texts += ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 14))) for _ in range(400)]
    for _ in range(2):
        got = tok.encode_batch(texts)
        for text, ids in zip(texts, got):
            assert ids.tolist() == list(tok.hf.encode(text, add_special_tokens=False).ids), text


def test_the_ascii_check_never_misses_a_joined_space():
    """The cheap check for ASCII texts may say a space could be joined when it is not, never
    the reverse: every text the regex finds a joined space in is flagged."""
    from genlab.data.bpe import _JOINED_SPACE, _may_join_space

    rng = random.Random(1)
    texts = ["".join(rng.choices(ASCII_PIECES[:-1], k=rng.randint(0, 12))) for _ in range(5000)]
    joined = [t for t in texts if _JOINED_SPACE.search(t)]
    assert len(joined) > 1000  # the pieces make many
    assert all(_may_join_space(t) for t in joined)
    assert not _may_join_space("a b. c, (d) 12 x_y")


def _prose(rng):
    words = ["the", "module", "returns", "a", "value", "it's", "x2", "(see", "below)."]
    return " ".join(rng.choice(words) for _ in range(60))


def test_training_sample_takes_evenly_spaced_documents_up_to_the_budget():
    sizes = np.full(12, 1000)  # 12 KB of text
    assert training_sample(sizes, None).all() and training_sample(sizes, 0.012).all()
    assert np.flatnonzero(training_sample(sizes, 0.004)).tolist() == [2, 5, 8, 11]  # every 3rd
    assert np.flatnonzero(training_sample(sizes, 0.006)).tolist() == [1, 3, 5, 7, 9, 11]
