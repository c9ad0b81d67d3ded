"""Exact and near-duplicate removal on crafted pairs above and below the threshold."""

from __future__ import annotations

import random
import sys

import pytest

from genlab import config
from genlab.config import DedupSection
from genlab.data.dedup import deduplicate, jaccard, shingles
from genlab.data.documents import Document
from genlab.errors import ConfigError, MissingDependencyError

VOCAB = [
    "module",
    "class",
    "function",
    "return",
    "value",
    "string",
    "list",
    "dict",
    "tuple",
    "import",
    "error",
    "raise",
    "object",
    "method",
    "attribute",
    "default",
    "keyword",
    "argument",
    "iterator",
    "generator",
    "file",
    "path",
    "buffer",
    "stream",
    "encoding",
    "context",
    "manager",
    "thread",
    "lock",
    "queue",
    "socket",
]


def _text(rng, n=120):
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def _edit(text, rng, n_edits):
    words = text.split()
    for _ in range(n_edits):
        words[rng.randrange(len(words))] = f"edit{rng.randrange(10**6)}"
    return " ".join(words)


def _doc(i, text):
    return Document(id=f"d{i}", text=text, source="s", position=f"line {i}")


def test_exact_duplicates_normalised_first_kept():
    docs = [_doc(0, "Hello   World"), _doc(1, "other text"), _doc(2, "hello world\n")]
    result = deduplicate(docs, DedupSection(near=False), seed=0)
    assert [d.id for d in result.kept] == ["d0", "d1"]
    (removal,) = result.removed
    assert (removal.id, removal.reason, removal.kept_id) == ("d2", "exact_dup", "d0")
    assert removal.kept_position == "line 0"
    assert result.counts["exact_dup"] == 1


def test_near_duplicate_above_threshold_removed_below_kept():
    rng = random.Random(1)
    base = _text(rng)
    close = _edit(base, rng, 2)  # true Jaccard ~0.9
    far = _edit(base, rng, 25)  # true Jaccard well below 0.8
    j_close = jaccard(shingles(base), shingles(close))
    j_far = jaccard(shingles(base), shingles(far))
    assert j_close > 0.85 and j_far < 0.6
    docs = [_doc(0, base), _doc(1, close), _doc(2, far), _doc(3, _text(rng))]
    result = deduplicate(docs, DedupSection(threshold=0.8), seed=0)
    assert [d.id for d in result.kept] == ["d0", "d2", "d3"]
    (removal,) = result.removed
    assert (removal.id, removal.reason, removal.kept_id) == ("d1", "near_dup", "d0")
    assert removal.similarity >= 0.8


def test_first_document_of_cluster_is_kept_for_every_member():
    rng = random.Random(2)
    base = _text(rng, 200)
    docs = [_doc(0, _text(rng)), _doc(1, base)] + [
        _doc(i, _edit(base, rng, 1)) for i in range(2, 6)
    ]
    result = deduplicate(docs, DedupSection(), seed=0)
    assert [d.id for d in result.kept] == ["d0", "d1"]
    assert {r.kept_id for r in result.removed} == {"d1"}
    assert result.clusters() == {"d1": ["d2", "d3", "d4", "d5"]}


def test_char_shingles_catch_short_near_duplicates():
    docs = [
        _doc(0, "The quick brown fox jumps over the lazy dog."),
        _doc(1, "The quick brown fox jumped over the lazy dog."),
        _doc(2, "Completely different sentence about sockets."),
    ]
    opts = DedupSection(shingle="char", shingle_size=4, threshold=0.7)
    result = deduplicate(docs, opts, seed=0)
    assert [d.id for d in result.kept] == ["d0", "d2"]


def test_near_dedup_is_seeded_and_deterministic():
    rng = random.Random(3)
    base = _text(rng)
    docs = [_doc(i, _edit(base, rng, i % 4)) for i in range(12)]
    a = deduplicate(docs, DedupSection(), seed=7)
    b = deduplicate(docs, DedupSection(), seed=7)
    assert a.removed == b.removed


def test_missing_datasketch_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasketch", None)
    with pytest.raises(MissingDependencyError, match="datasketch"):
        deduplicate([_doc(0, "a b c"), _doc(1, "d e f")], DedupSection(), seed=0)


@pytest.mark.parametrize(
    "override",
    [
        "data.dedup.threshold=0.0",
        "data.dedup.threshold=1.5",
        "data.dedup.shingle=line",
        "data.dedup.shingle_size=0",
        "data.dedup.num_perm=4",
    ],
)
def test_bad_settings_are_one_line_config_errors(override):
    with pytest.raises(ConfigError) as err:
        config.load(None, [override])
    message = str(err.value)
    assert override.split("=")[0] in message and "\n" not in message and len(message) <= 300


@pytest.mark.parametrize("shingle,size,num_perm", [("word", 3, 128), ("char", 4, 64)])
def test_signer_equals_datasketch_minhash(shingle, size, num_perm):
    """The numpy signatures are datasketch's own (MinHash.update_batch on the same shingle
    hashes), empty and one-word texts included."""
    datasketch = pytest.importorskip("datasketch")
    from genlab.data.dedup import Signer, fold, shingle_hashes

    rng = random.Random(4)
    opts = DedupSection(shingle=shingle, shingle_size=size, num_perm=num_perm)
    signer = Signer.seeded(opts, seed=11)
    texts = ["", "one", "Two Words", *(_text(rng, n) for n in (3, 50, 3000))]
    for text in texts:
        reference = datasketch.MinHash(num_perm=num_perm, seed=11, hashfunc=int)
        reference.update_batch(shingle_hashes(fold(text), shingle, size).tolist())
        assert signer(fold(text)).tolist() == [int(v) for v in reference.hashvalues], text[:30]


def test_near_index_decides_as_datasketch_lsh_does_across_table_merges(monkeypatch):
    """NearIndex (compact band tables) against datasketch's MinHashLSH on the same
    signatures: every document matches the same earliest kept document, or none. Small
    merge batches make the sorted arrays and the recent dict both hold entries."""
    import numpy as np
    from datasketch import MinHash, MinHashLSH

    from genlab.data.dedup import LSH_WEIGHTS, BandKeys, NearIndex

    monkeypatch.setattr(BandKeys, "MIN_MERGE", 64)
    options = DedupSection()
    rng = np.random.default_rng(0)
    signatures: list[np.ndarray] = []
    for i in range(3000):
        if i > 10 and rng.random() < 0.3:  # a near copy of an earlier document
            sig = signatures[rng.integers(0, i)].copy()
            changed = rng.choice(options.num_perm, size=rng.integers(1, 50), replace=False)
            sig[changed] = rng.integers(0, 2**32, size=changed.size, dtype=np.uint32)
        else:
            sig = rng.integers(0, 2**32, size=options.num_perm, dtype=np.uint32)
        signatures.append(sig)

    index = NearIndex(options)
    lsh = MinHashLSH(threshold=options.threshold, num_perm=options.num_perm, weights=LSH_WEIGHTS)
    kept: list[np.ndarray] = []
    ours, reference = [], []
    for sig in signatures:
        found = index.match(sig)
        ours.append(None if found is None else found[0])
        candidates = sorted(
            lsh.query(MinHash(num_perm=options.num_perm, hashvalues=sig, scheme="affine32"))
        )
        sims = [(k, np.count_nonzero(kept[k] == sig) / options.num_perm) for k in candidates]
        first = next((k for k, s in sims if s >= options.threshold), None)
        reference.append(first)
        if first is None:
            lsh.insert(
                len(kept), MinHash(num_perm=options.num_perm, hashvalues=sig, scheme="affine32")
            )
            kept.append(sig)
            assert index.add(sig) == len(kept) - 1
    assert ours == reference
    assert sum(r is not None for r in reference) > 100  # near copies were found
    assert index.table.keys.size and index.table.recent  # both parts of the table in use


def test_band_keys_find_every_index_stored_under_a_key_across_merges(monkeypatch):
    """BandKeys against a plain dict of lists, with keys from a small range (many
    collisions) and merges every few additions."""
    import numpy as np

    from genlab.data.dedup import BandKeys

    monkeypatch.setattr(BandKeys, "MIN_MERGE", 16)
    rng = np.random.default_rng(1)
    table, reference = BandKeys(), {}
    for index in range(2000):
        keys = rng.integers(-500, 500, size=14, dtype=np.int64)
        query = rng.integers(-500, 500, size=14, dtype=np.int64)
        found: set[int] = set()
        table.find(query, found)
        assert found == {i for k in query.tolist() for i in reference.get(k, [])}
        table.add(keys, index)
        for k in keys.tolist():
            reference.setdefault(k, []).append(index)
    assert table.keys.size > 20_000  # most entries went through merges


def test_band_keys_change_exactly_with_the_bands_values():
    """A key per band: equal bands give equal keys, a changed value changes its band's key
    only, and the same values in two different bands give two keys."""
    import numpy as np

    from genlab.data.dedup import NearIndex

    index = NearIndex(DedupSection())
    bands, rows = len(index.bands), index.bands[0][1]
    rng = np.random.default_rng(2)
    base = rng.integers(0, 2**32, size=(1, 128), dtype=np.uint32)
    changed = np.repeat(base, bands, axis=0)
    for band in range(bands):
        changed[band, band * rows + rng.integers(rows)] ^= 1  # one value of one band
    keys, base_keys = index.band_keys(changed), index.band_keys(base)[0]
    assert keys.shape == (bands, bands) and keys.dtype == np.int64
    assert ((keys != base_keys) == np.eye(bands, dtype=bool)).all()
    same = np.tile(base[:, :rows], (1, 128 // rows + 1))[:, :128]  # every band alike
    assert len(set(index.band_keys(same)[0].tolist())) == bands
    unused = base.copy()
    unused[0, bands * rows :] += 1  # values past the last band are in no key
    assert (index.band_keys(unused)[0] == base_keys).all()


def _reference_word_hashes(folded: str) -> list[int]:
    """The documented word hash, from the regex's words and Python integers: fmix64 of
    sum(ord(c_k) * P^k) mod 2^64."""
    import re

    from genlab.data.dedup import _POLY

    mask = 2**64 - 1

    def fmix64(h: int) -> int:
        h ^= h >> 33
        h = (h * 0xFF51AFD7ED558CCD) & mask
        h ^= h >> 33
        h = (h * 0xC4CEB9FE1A85EC53) & mask
        return h ^ (h >> 33)

    return [
        fmix64(sum(ord(c) * pow(_POLY, k, 2**64) for k, c in enumerate(word)) & mask)
        for word in re.findall(r"\w+", folded)
    ]


WORDY_TEXTS = [
    "",
    "   ",
    "one",
    "Two  words, and_underscores 42 x9!",
    "¿Qué pasó? Ça va… naïve café",
    "中文分词 没有空格。日本語のテキスト",
    "emoji 🎉🎉 between\twords\nand lines",
    "combining e\u0301 marks and ﬁ ligatures ²³",
    "ends with a word",
    "!!! leading and trailing punctuation ...",
]


@pytest.mark.parametrize("text", WORDY_TEXTS)
def test_word_hashes_are_the_regex_words_hashed(text):
    """The numpy word finder and hash equal the regex's words (`\\w+`, Unicode) hashed one
    by one in Python integers."""
    from genlab.data.dedup import fold, word_hashes

    folded = fold(text)
    assert word_hashes(folded).tolist() == _reference_word_hashes(folded)


@pytest.mark.parametrize("extra", [["ünïcode", "x"], ["x", "y" * 30, "a_b"]], ids=["any", "ascii"])
def test_word_hashes_of_a_long_text_are_cut_between_words(monkeypatch, extra):
    """A text longer than one prefix-sum block is hashed block by block, cut only between
    words (searched for a few characters at a time, backwards, past words longer than
    that), so the hashes are those of the whole text."""
    from genlab.data import dedup

    rng = random.Random(5)
    text = " ".join(rng.choice([*VOCAB, *extra]) for _ in range(400))
    monkeypatch.setattr(dedup, "_HASH_BLOCK", 37)
    monkeypatch.setattr(dedup, "_GAP_WINDOW", 3)
    dedup._powers.cache_clear()
    try:
        assert len(text) > 20 * 37
        assert dedup.word_hashes(text).tolist() == _reference_word_hashes(text)
    finally:
        monkeypatch.undo()
        dedup._powers.cache_clear()


@pytest.mark.parametrize("shingle,size", [("word", 3), ("word", 1), ("word", 5), ("char", 4)])
def test_signing_a_batch_equals_signing_each_text(monkeypatch, shingle, size):
    """sign_many over texts of every length (empty, shorter than one shingle, longer than
    one MinHash chunk, non-ASCII, holding NUL) gives each text's own signature."""
    import numpy as np

    from genlab.data import dedup

    monkeypatch.setattr(dedup, "_UPDATE_CHUNK", 64)  # groups of texts and oversized texts
    rng = random.Random(6)
    opts = DedupSection(shingle=shingle, shingle_size=size)
    signer = dedup.Signer.seeded(opts, seed=3)
    texts = ["", "one", "two words", "\0 nul\0inside", "...", *WORDY_TEXTS]
    texts += [_text(rng, rng.choice([2, 4, 10, 40, 150])) for _ in range(60)]
    rng.shuffle(texts)
    folded = [dedup.fold(t) for t in texts]
    got = signer.sign_many(folded)
    assert got.shape == (len(texts), opts.num_perm) and got.dtype == np.uint32
    for text, row in zip(folded, got):
        assert row.tolist() == signer(text).tolist(), text[:40]


def test_matching_a_shard_at_once_decides_as_one_document_at_a_time(monkeypatch):
    """The streaming build looks a shard's band keys up in the merged tables at once and
    merges only between shards; every document gets the decision the one-at-a-time index
    (checked against datasketch above) gives it."""
    import numpy as np

    from genlab.data.dedup import BandKeys, NearIndex

    monkeypatch.setattr(BandKeys, "MIN_MERGE", 64)
    options = DedupSection()
    rng = np.random.default_rng(3)
    signatures = rng.integers(0, 2**32, size=(3000, options.num_perm), dtype=np.uint32)
    for i in range(11, 3000):
        if rng.random() < 0.3:  # a near copy of an earlier document
            signatures[i] = signatures[rng.integers(0, i)]
            changed = rng.choice(options.num_perm, size=rng.integers(1, 50), replace=False)
            signatures[i, changed] = rng.integers(0, 2**32, size=changed.size, dtype=np.uint32)

    def decide(index: NearIndex, sig, **batch) -> int | None:
        found = index.match(sig, **batch)
        if found is None:
            index.add(sig, batch.get("keys"), merge="merged" not in batch)
        return None if found is None else found[0]

    one = NearIndex(options)
    expected = [decide(one, sig) for sig in signatures]
    assert sum(e is not None for e in expected) > 300  # most near copies were found

    batched, got, start = NearIndex(options), [], 0
    while start < len(signatures):
        shard = signatures[start : start + int(rng.integers(1, 300))]
        keys = batched.band_keys(shard)
        merged = batched.table.merged_hits(keys)
        for row, sig in enumerate(shard):
            got.append(decide(batched, sig, keys=keys[row], merged=merged.get(row, set())))
        batched.table.merge_if_due()
        start += len(shard)
    assert got == expected
    assert batched.table.keys.size > 0  # the tables were merged between shards


WHITESPACE_ALPHABETS = ["ab \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x00\x7f.", "ab \n\x85\xa0\u2028é"]


@pytest.mark.parametrize("alphabet", WHITESPACE_ALPHABETS, ids=["ascii", "any"])
def test_exact_key_collapses_whitespace_as_the_regex_does(alphabet):
    """The exact key's text (fast ASCII path and the rest) is `re.sub(r"\\s+", " ", t)`
    stripped, for texts full of every kind of whitespace, leading and trailing included."""
    import hashlib
    import re

    from genlab.data.dedup import collapsed_utf8, exact_key

    rng = random.Random(0)
    texts = ["", " ", "a", "a b", " a", "a ", "a  b", "a\nb", "a\x1cb"]
    texts += ["".join(rng.choices(alphabet, k=rng.randint(0, 30))) for _ in range(3000)]
    for text in texts:
        expected = re.sub(r"\s+", " ", text).strip().encode("utf-8")
        assert collapsed_utf8(text) == expected, repr(text)
        digest = hashlib.sha256(expected).digest()
        assert exact_key(text) == int.from_bytes(digest[:8], "little")
