import numpy as np
import pytest

from genlab.config import DataConfig
from genlab.data.corpus import read_source, split_corpus
from genlab.data.lm import WindowSampler, build_lm_data, windows
from genlab.data.sources import python_docs
from genlab.data.tokenizers import CharTokenizer, load_tokenizer
from genlab.errors import DataError


def test_python_docs_corpus_ships_with_python():
    docs = python_docs()
    assert len(docs) > 50
    assert 400_000 < sum(len(d.text) for d in docs) < 600_000


def test_split_is_by_document_and_seeded():
    cfg = DataConfig()
    first = split_corpus(cfg, seed=1)
    train, val = first.train, first.val
    assert {d.id for d in train}.isdisjoint({d.id for d in val})
    assert len(train) + len(val) + len(first.removed) == len(python_docs())
    assert [d.id for d in split_corpus(cfg, seed=1).train] == [d.id for d in train]
    assert [d.id for d in split_corpus(cfg, seed=2).train] != [d.id for d in train]


def _read(path):
    return read_source(DataConfig(source=str(path))).documents


def test_text_file_and_directory_sources(tmp_path):
    f = tmp_path / "book.txt"
    f.write_text("first part\nstill first\n\nsecond part\n\n\nthird\n")
    assert [d.text for d in _read(f)] == [
        "first part\nstill first",
        "second part",
        "third",
    ]
    d = tmp_path / "dir"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("alpha")
    (d / "sub" / "b.txt").write_text("beta")
    (d / "skip.md").write_text("not text")
    assert [x.text for x in _read(d)] == ["alpha", "beta"]


def test_char_tokenizer_round_trip_and_unknown(tmp_path):
    tok = CharTokenizer.train(["hello world"])
    assert tok.decode(tok.encode("hello")) == "hello"
    assert tok.encode("z") == [0]  # never seen in training → unknown id
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.encode("world") == tok.encode("world")


def test_char_vocab_is_learned_from_the_train_split_only():
    data = build_lm_data(DataConfig(block_size=8), seed=0)
    used = set(np.unique(data.train_tokens).tolist())
    assert 0 not in used  # every train character is in the vocabulary
    assert used == set(range(1, data.tokenizer.vocab_size))  # and nothing else is


def test_sampler_is_seeded_resumable_and_skips():
    s = WindowSampler(n_tokens=10_000, block_size=16, seed=3)
    first = [s.next_batch(7) for _ in range(50)]  # crosses several epochs
    t = WindowSampler(n_tokens=10_000, block_size=16, seed=3)
    assert [t.next_batch(7) for _ in range(50)] == first
    # Resume from a saved position gives the same continuation.
    a = WindowSampler(10_000, 16, 3)
    for _ in range(20):
        a.next_batch(7)
    state = a.state_dict()
    b = WindowSampler(10_000, 16, 3)
    b.load_state_dict(state)
    assert [b.next_batch(7) for _ in range(30)] == first[20:]
    # Skipped ids never come back, whatever the batch size.
    c = WindowSampler(10_000, 16, 3)
    c.skipped.update(range(0, 600, 2))
    seen = {i for _ in range(200) for i in c.next_batch(5)[0]}
    assert seen.isdisjoint(c.skipped)


def test_windows_are_shifted_targets():
    tokens = np.arange(100, dtype=np.int64)
    x, y = windows(tokens, [0, 10], block_size=5)
    assert x.tolist()[1] == [10, 11, 12, 13, 14]
    assert y.tolist()[1] == [11, 12, 13, 14, 15]


def test_too_few_documents_is_a_clean_error(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("only one paragraph here")
    with pytest.raises(DataError, match="at least 2"):
        build_lm_data(DataConfig(source=str(f)), seed=0)


def test_sklearn_docs_is_a_second_builtin_corpus():
    from genlab.data.sources import builtin_documents

    docs = builtin_documents("sklearn-docs")
    assert len(docs) >= 10
    assert any("digits" in d.id for d in docs)
    assert 20_000 < sum(len(d.text) for d in docs) < 200_000
