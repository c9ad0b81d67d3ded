"""Deduplication: exact (hash of normalised text) and near-duplicate (MinHash + LSH).

Runs before the train/val/test split, so a document and its near-copy can never land in
different splits (that would leak training text into evaluation). Documents are processed in
order and the FIRST document of each cluster is kept; every later member gets a Removal naming
the kept document.

Near-duplicates: each document becomes a set of shingles (word or character n-grams of its
normalised text), summarised by a seeded MinHash (datasketch). LSH banding (datasketch's
optimal band count `b` and rows `r` for the threshold) proposes candidate documents; each
candidate is then verified with the MinHash Jaccard estimate against the threshold, so
band collisions alone never remove a document (precision stays high). Only kept documents
are indexed, so every removed document matched a document that is really kept.

The pieces work one document at a time, so the list functions here and the streaming
preparation (genlab.data.stages / genlab.data.streaming) share them: `fold` + `exact_key`,
`Signer` (in workers) and `NearIndex` (one per build). `NearIndex` keeps one 64-bit key per
band and document (`BandKeys`: sorted numpy arrays plus a dict of recent keys) and the
signatures in a `SignatureStore` (a file when streaming): about 0.7 KB of memory per kept
document at the default 14 bands, while the 512-byte signatures stay on disk.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genlab.config import DedupSection
from genlab.data.documents import Document
from genlab.data.provenance import Removal
from genlab.errors import require

_WORD = re.compile(r"\w+")
# Odd 64-bit multipliers that mix the hashes of a shingle's words (or characters) into one
# shingle hash; the position of each word matters ("a b c" != "c b a").
_MIX = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5],
    dtype=np.uint64,
)
_UPDATE_CHUNK = 8192  # shingles per MinHash update: (num_perm, 8192) uint32 temporaries, 4 MB
SIGN_BATCH = 256  # texts signed at once (Signer.sign_many): ~1 MB of text
# LSH weights favour recall in the banding (fewer missed pairs); the explicit Jaccard check
# removes the extra false candidates that this lets through.
LSH_WEIGHTS = (0.1, 0.9)


@dataclass
class DedupResult:
    """Kept documents (input order), one Removal per dropped document, and counts
    ("input", "exact_dup", "near_dup", "kept", "near_candidates" checked)."""

    kept: list[Document]
    removed: list[Removal]
    counts: dict[str, int]

    def clusters(self) -> dict[str, list[str]]:
        """kept document id -> ids of the documents removed as its duplicates."""
        out: dict[str, list[str]] = {}
        for r in self.removed:
            if r.kept_id is not None:
                out.setdefault(r.kept_id, []).append(r.id)
        return out


def deduplicate(docs: Iterable[Document], options: DedupSection, *, seed: int) -> DedupResult:
    """Remove exact then near duplicates, keeping the first document of each cluster.

    `seed` seeds the MinHash permutations (the result is deterministic for a given seed)."""
    docs = list(docs)
    counts: Counter[str] = Counter(input=len(docs), exact_dup=0, near_dup=0, near_candidates=0)
    removed: list[Removal] = []
    kept = docs
    if options.exact:
        kept, gone = exact_dedup(kept)
        removed += gone
        counts["exact_dup"] = len(gone)
    if options.near and len(kept) > 1:
        kept, gone, checked = near_dedup(kept, options, seed=seed)
        removed += gone
        counts["near_dup"] = len(gone)
        counts["near_candidates"] = checked
    counts["kept"] = len(kept)
    return DedupResult(kept=kept, removed=removed, counts=dict(counts))


def fold(text: str) -> str:
    """NFKC and case folding: what both exact and near duplicate detection compare."""
    return unicodedata.normalize("NFKC", text).casefold()


def normalize_for_hash(text: str) -> str:
    """Text as compared for exact duplicates: NFKC, case-folded, whitespace collapsed."""
    return _collapse(fold(text))


def _collapse(text: str) -> str:
    """Runs of whitespace -> one space, none at the ends: `re.sub(r"\\s+", " ", t).strip()`
    (str.split splits at exactly the characters `\\s` matches), four times faster."""
    return " ".join(text.split())


# The ASCII characters besides " " that str.split cuts at, each mapped to " " (bytes.split
# cuts at " \t\n\r\x0b\x0c" only, so the other four must be spaces before it runs).
_ASCII_SPACES = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f"
_TO_SPACE = bytes.maketrans(_ASCII_SPACES.encode("ascii"), b" " * len(_ASCII_SPACES))


def collapsed_utf8(text: str) -> bytes:
    """`_collapse(text)` as UTF-8. An ASCII text (most of them) has its whitespace mapped
    to spaces in one C pass and is split and joined only when a space run or an end space
    is left: ~3x cheaper than splitting every text into words."""
    if not text.isascii():
        return _collapse(text).encode("utf-8")
    flat = text.encode("ascii").translate(_TO_SPACE)
    if b"  " in flat or flat.startswith(b" ") or flat.endswith(b" "):
        return b" ".join(flat.split())
    return flat


def exact_key(folded: str) -> int:
    """64 bits of sha256 naming a document's text up to case and whitespace (`folded` =
    fold(text)); an int, the most compact dictionary key (a false match among a million
    documents has odds of about 1 in 10^8)."""
    digest = hashlib.sha256(collapsed_utf8(folded)).digest()
    return int.from_bytes(digest[:8], "little")


def exact_dedup(docs: Iterable[Document]) -> tuple[list[Document], list[Removal]]:
    """Keep the first document per normalised-text hash; the rest become `exact_dup`."""
    first: dict[int, Document] = {}
    kept: list[Document] = []
    removed: list[Removal] = []
    for doc in docs:
        key = exact_key(fold(doc.text))
        if key in first:
            removed.append(Removal.of(doc, "exact_dup", kept=first[key], similarity=1.0))
        else:
            first[key] = doc
            kept.append(doc)
    return kept, removed


def shingles(text: str, kind: str = "word", size: int = 3) -> set[str]:
    """The shingle set of `text`. Texts shorter than one shingle yield one shingle of
    everything they have, so short documents can still be compared."""
    if kind == "word":
        words = _WORD.findall(fold(text))
        if len(words) <= size:
            return {" ".join(words)} if words else set()
        return {" ".join(words[i : i + size]) for i in range(len(words) - size + 1)}
    flat = normalize_for_hash(text)
    if len(flat) <= size:
        return {flat} if flat else set()
    return {flat[i : i + size] for i in range(len(flat) - size + 1)}


def shingle_hashes(folded: str, kind: str = "word", size: int = 3) -> np.ndarray:
    """32-bit hashes of the shingles of `shingles()` (repeats included: a MinHash of a
    multiset is the MinHash of its set). `folded` = fold(text). Vectorised: each word (or
    character) is hashed once and every shingle's hash mixed from its parts with numpy."""
    if kind == "word":
        parts = word_hashes(folded)
    else:
        flat = _collapse(folded)
        parts = np.frombuffer(flat.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if parts.size == 0:
        return np.zeros(0, dtype=np.uint64)
    width = min(size, parts.size)  # a text shorter than one shingle is one shingle
    return _mix(parts, width) >> np.uint64(32)


def _mix(parts: np.ndarray, width: int) -> np.ndarray:
    """(len(parts) - width + 1,) uint64: the 64-bit hash of each window of `width` parts."""
    count = parts.size - width + 1
    mixed = np.zeros(count, dtype=np.uint64)
    for i in range(width):
        mixed ^= parts[i : i + count] * _MIX[i % len(_MIX)] + np.uint64(i)
    return mixed


# Word hashing without a Python string per word (regex findall plus a dict lookup per word
# cost ~5x the MinHash itself). A word is a maximal run of `\w` characters, found with a
# per-code-point table; its hash is the polynomial sum(c_k * P^k) mod 2^64 over its code
# points c_0.., read off one prefix sum of the whole text, then finalised with fmix64.
_POLY = 0x100000001B3  # odd, so invertible mod 2^64 (the FNV-64 prime)
_HASH_BLOCK = 1 << 20  # characters per prefix sum: power tables stay 8 MB however long a text


@functools.cache
def _powers() -> tuple[np.ndarray, np.ndarray]:
    """(_HASH_BLOCK,) uint64 P^k and P^-k mod 2^64, made on first use (16 MB)."""
    powers = np.ones((2, _HASH_BLOCK), dtype=np.uint64)
    for row, base in enumerate((_POLY, pow(_POLY, -1, 2**64))):
        powers[row, 1:] = np.cumprod(np.full(_HASH_BLOCK - 1, base, dtype=np.uint64))
    return powers[0], powers[1]


_ASCII_WORD = np.array([_WORD.fullmatch(chr(c)) is not None for c in range(256)])
# The same table as a bytes.translate table (byte -> 0 or 1): one C pass over the text's
# bytes gives its (n,) bool word mask, ~3x cheaper than indexing the array with the codes.
_ASCII_WORD_BYTES = bytes(_ASCII_WORD.astype(np.uint8).tolist())
_GAP_WINDOW = 4096  # characters searched at a time, backwards, for a block's last non-word
_unicode_word: list[np.ndarray] = []  # the table for every code point, built on first use


def _is_word_table() -> np.ndarray:
    r"""(0x110000,) bool: which code points `\w` matches, asked of the regex engine itself
    (~0.3 s, once per process, and only when a text is not ASCII)."""
    if not _unicode_word:
        everything = "".join(map(chr, range(0x110000)))
        marked = re.sub(r"\W", "\0", everything)  # chr(0) is not a word character either
        codes = np.frombuffer(marked.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        _unicode_word.append(codes != 0)
    return _unicode_word[0]


def word_hashes(folded: str) -> np.ndarray:
    r"""(words,) uint64 hashes of the words `re.findall(r"\w+", folded)` finds, in order."""
    return _words(folded)[1]


def _words(folded: str) -> tuple[np.ndarray, np.ndarray]:
    """((words,) int64 index of each word's first character, (words,) uint64 its hash)."""
    if folded.isascii():
        raw = folded.encode("ascii")
        codes = np.frombuffer(raw, dtype=np.uint8)
        is_word = np.frombuffer(raw.translate(_ASCII_WORD_BYTES), dtype=np.bool_)
    else:
        codes = np.frombuffer(folded.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        is_word = _is_word_table()[codes]
    if codes.size <= _HASH_BLOCK:
        return _block_words(codes, is_word)
    starts, hashes, start = [], [], 0
    while start < codes.size:  # cut between words; a word longer than a block is cut too
        end = start + _HASH_BLOCK
        if end < codes.size:
            end = _after_last_gap(is_word, start, end)
        block_starts, block_hashes = _block_words(codes[start:end], is_word[start:end])
        starts.append(block_starts + start)
        hashes.append(block_hashes)
        start = end
    return np.concatenate(starts), np.concatenate(hashes)


def _after_last_gap(is_word: np.ndarray, start: int, end: int) -> int:
    """Just after the last non-word character in is_word[start:end] (`end` if there is
    none), searched backwards a window at a time: prose has one within a few characters."""
    high = end
    while high > start:
        low = max(start, high - _GAP_WINDOW)
        gaps = np.flatnonzero(~is_word[low:high])
        if gaps.size:
            return low + int(gaps[-1]) + 1
        high = low
    return end


def _block_words(codes: np.ndarray, is_word: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = codes.size  # codes: (n,) code points, is_word: (n,) bool, n <= _HASH_BLOCK
    padded = np.zeros(n + 2, dtype=np.int8)
    padded[1:-1] = is_word
    edges = np.flatnonzero(padded[1:] != padded[:-1])  # word starts and ends, alternating
    starts, ends = edges[0::2], edges[1::2]
    power, inverse = _powers()
    prefix = np.zeros(n + 1, dtype=np.uint64)  # prefix[i] = sum_{k<i} c_k P^k (wrapping)
    np.cumsum(np.multiply(codes, power[:n], dtype=np.uint64), out=prefix[1:])
    return starts, fmix64((prefix[ends] - prefix[starts]) * inverse[starts])


def fmix64(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer, element-wise on a uint64 array (wrapping)."""
    return _murmur_finalizer(values, (33, 33, 33), (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53))


def _murmur_finalizer(
    values: np.ndarray, shifts: tuple[int, int, int], multipliers: tuple[int, int]
) -> np.ndarray:
    """xor-shift, multiply, xor-shift, multiply, xor-shift, in the array's unsigned dtype."""
    word = values.dtype.type
    h = values ^ (values >> word(shifts[0]))
    h *= word(multipliers[0])
    h ^= h >> word(shifts[1])
    h *= word(multipliers[1])
    h ^= h >> word(shifts[2])
    return h


def jaccard(a: set[str], b: set[str]) -> float:
    """True Jaccard similarity |a ∩ b| / |a ∪ b| (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class Signer:
    """MinHash signatures of texts, as (num_perm,) uint32 arrays: datasketch's "affine32"
    scheme (its default since 2.0) with its seeded permutations, computed here in numpy
    over a whole shingle array at once. `MinHash.update_batch` gives the same values (the
    tests check it) but builds a Python list and a MinHash object per document, which was
    half the scan's time."""

    def __init__(self, options: DedupSection, permutations: np.ndarray):
        self.options = options
        # The permutations h -> a * h + b mod 2^32 (a odd): minhash_permutations().
        self.a = np.ascontiguousarray(permutations[0], dtype=np.uint32)  # (num_perm,)
        self.b = np.ascontiguousarray(permutations[1], dtype=np.uint32)  # (num_perm,)
        self.empty = np.full(options.num_perm, np.iinfo(np.uint32).max, dtype=np.uint32)

    @classmethod
    def seeded(cls, options: DedupSection, seed: int) -> Signer:
        return cls(options, minhash_permutations(options.num_perm, seed))

    def __call__(self, folded: str) -> np.ndarray:
        """The signature of a text (`folded` = fold(text)); an empty shingle set gives the
        all-maximum signature, as an empty MinHash has."""
        values = shingle_hashes(folded, self.options.shingle, self.options.shingle_size)
        if values.size == 0:
            return self.empty.copy()
        hashed = fmix32(values.astype(np.uint32))
        signature = self.empty.copy()
        for i in range(0, hashed.size, _UPDATE_CHUNK):
            # (chunk, num_perm) uint32; the products wrap mod 2^32, as the scheme defines.
            permuted = np.multiply.outer(hashed[i : i + _UPDATE_CHUNK], self.a)
            permuted += self.b
            np.minimum(signature, permuted.min(axis=0), out=signature)
        return signature

    def sign_many(self, folded: Sequence[str]) -> np.ndarray:
        """(n, num_perm) signatures of many texts, equal to `[self(t) for t in folded]`
        (the tests check it). Word shingles of the whole batch are hashed in one pass and
        the minimums taken a group of texts at a time, so numpy's per-call cost (~50 calls
        a text) is paid per batch."""
        n, size = len(folded), self.options.shingle_size
        out = np.repeat(self.empty[None, :], n, axis=0)
        if self.options.shingle != "word" or n == 0:
            for i, text in enumerate(folded):
                out[i] = self(text)
            return out
        lengths = np.fromiter(map(len, folded), dtype=np.int64, count=n)
        text_starts = np.cumsum(lengths + 1) - lengths - 1  # where each text starts in joined
        starts, parts = _words("\0".join(folded))  # NUL is no word character: no word spans two
        owner = np.searchsorted(text_starts, starts, side="right") - 1  # (words,) their text
        counts = np.bincount(owner, minlength=n)
        for i in np.flatnonzero((counts > 0) & (counts < size)).tolist():
            out[i] = self(folded[i])  # shorter than one shingle: one shingle of all it has
        if parts.size < size:
            return out
        mixed = _mix(parts, size)  # (windows,) every window of `size` words, texts or not
        first = owner[: mixed.size]
        inside = first == owner[size - 1 :]  # the windows within one text
        hashed = fmix32((mixed[inside] >> np.uint64(32)).astype(np.uint32))
        self._minimums_into(out, hashed, first[inside])
        return out

    def _minimums_into(self, out: np.ndarray, hashed: np.ndarray, text: np.ndarray) -> None:
        """out[t] = the signature of the shingle hashes `hashed[text == t]` (`text` sorted)."""
        if not hashed.size:
            return
        seg_starts = np.flatnonzero(np.diff(text, prepend=-1))  # (texts with shingles,)
        seg_ends = np.append(seg_starts[1:], hashed.size)
        i = 0
        while i < seg_starts.size:
            lo = int(seg_starts[i])
            j = int(np.searchsorted(seg_ends, lo + _UPDATE_CHUNK, side="right"))
            if j <= i:  # one text with more shingles than a chunk: chunk by chunk
                signature = out[text[lo]]
                for at in range(lo, int(seg_ends[i]), _UPDATE_CHUNK):
                    part = hashed[at : min(at + _UPDATE_CHUNK, int(seg_ends[i]))]
                    np.minimum(signature, self._permuted(part).min(axis=1), out=signature)
                i += 1
                continue
            permuted = self._permuted(hashed[lo : int(seg_ends[j - 1])])
            mins = np.minimum.reduceat(permuted, seg_starts[i:j] - lo, axis=1)  # (num_perm, k)
            out[text[seg_starts[i:j]]] = mins.T
            i = j

    def _permuted(self, hashed: np.ndarray) -> np.ndarray:
        """(num_perm, m) uint32: every permutation of the m hashes, wrapping mod 2^32 as the
        scheme defines; permutations along rows, so the minimum runs along contiguous rows
        (2x faster than reducing the (m, num_perm) transpose along its first axis)."""
        permuted = np.multiply.outer(self.a, hashed)
        permuted += self.b[:, None]
        return permuted


def minhash_permutations(num_perm: int, seed: int) -> np.ndarray:
    """(2, num_perm) uint32: the a and b that datasketch's affine32 MinHash draws from
    `seed`. Asked once, by the driver: workers get them in their task and never import
    datasketch (which imports scipy: ~1 s per process)."""
    datasketch = require("datasketch", "data")
    template = datasketch.MinHash(num_perm=num_perm, seed=seed, scheme="affine32")
    return np.asarray(template.permutations, dtype=np.uint32)


def fmix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (a bijection that spreads structured hash values),
    applied element-wise to a uint32 array; datasketch mixes every input with it."""
    return _murmur_finalizer(values, (16, 13, 16), (0x85EBCA6B, 0xC2B2AE35))


class SignatureStore:
    """Kept documents' signatures by index: in memory, or appended to `path` (a file read
    back with pread, so a streaming build does not hold them all in RAM)."""

    def __init__(self, width: int, path: Path | None = None, buffer_rows: int = 65536):
        self.row_bytes = width * 4
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600) if path else None
        self.flushed = 0  # rows already in the file
        self.buffer = bytearray()
        self.buffer_rows = buffer_rows

    def __len__(self) -> int:
        return self.flushed + len(self.buffer) // self.row_bytes

    def append(self, signature: np.ndarray) -> None:
        self.buffer += signature.tobytes()
        if self.fd is not None and len(self.buffer) >= self.buffer_rows * self.row_bytes:
            os.write(self.fd, self.buffer)
            self.flushed += len(self.buffer) // self.row_bytes
            self.buffer = bytearray()

    def get(self, index: int) -> np.ndarray:
        if index >= self.flushed:
            at = (index - self.flushed) * self.row_bytes
            raw = bytes(self.buffer[at : at + self.row_bytes])
        else:
            raw = os.pread(self.fd, self.row_bytes, index * self.row_bytes)  # type: ignore[arg-type]
        return np.frombuffer(raw, dtype=np.uint32)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class BandKeys:
    """The LSH band keys of the kept documents: key -> kept indices, in the order added.

    Older entries live in two sorted numpy arrays (an 8-byte key and an 8-byte index per band
    and document); the recent ones in a dict, merged into the arrays (one stable sort) when it
    holds over a quarter as many entries as they do, so the merges cost O(n log n) in all.
    A dict alone cost ~1.5 KB per kept document at 14 bands (a Python int key and a dict
    slot per band); this costs ~0.7 KB on average (tracemalloc, 100,000 documents)."""

    MIN_MERGE = 4096  # recent entries below which no merge happens

    def __init__(self) -> None:
        self.keys = np.zeros(0, dtype=np.int64)  # (m,) sorted
        self.values = np.zeros(0, dtype=np.int64)  # (m,) kept index of each key
        self.recent: dict[int, int | list[int]] = {}
        self.recent_entries = 0

    def find(self, keys: np.ndarray, found: set[int]) -> None:
        """Add the indices stored under any of `keys` ((bands,) int64) to `found`."""
        for hits in self.merged_hits(keys[None, :]).values():
            found |= hits
        self.find_recent(keys, found)

    def merged_hits(self, keys: np.ndarray) -> dict[int, set[int]]:
        """row -> the indices the sorted arrays hold under any of the row's keys, for (n,
        bands) keys at once (one searchsorted; rows with none are left out: most rows).
        The arrays change only when recent entries are merged in."""
        size, bands = self.keys.size, keys.shape[1]
        if not size:
            return {}
        flat = keys.ravel()
        lows = np.searchsorted(self.keys, flat)
        hits = self.keys[np.minimum(lows, size - 1)] == flat  # (n * bands,) mostly False
        out: dict[int, set[int]] = {}
        for at in np.flatnonzero(hits).tolist():
            i, key, found = int(lows[at]), flat[at], out.setdefault(at // bands, set())
            while i < size and self.keys[i] == key:
                found.add(int(self.values[i]))
                i += 1
        return out

    def find_recent(self, keys: np.ndarray, found: set[int]) -> None:
        """Add the indices stored under `keys` among the entries not merged yet."""
        for key in keys.tolist():
            hit = self.recent.get(key)
            if hit is not None:
                found.update(hit) if isinstance(hit, list) else found.add(hit)

    def add(self, keys: np.ndarray, index: int, merge: bool = True) -> None:
        """Store `index` under `keys`; merge the recent entries in when due, unless `merge`
        is False (the caller holds merged_hits of a batch and calls merge_if_due after it)."""
        for key in keys.tolist():
            hit = self.recent.get(key)
            if hit is None:
                self.recent[key] = index
            elif isinstance(hit, list):
                hit.append(index)
            else:
                self.recent[key] = [hit, index]
        self.recent_entries += len(keys)
        if merge:
            self.merge_if_due()

    def merge_if_due(self) -> None:
        if self.recent_entries > max(self.MIN_MERGE, self.keys.size // 4):
            self._merge()

    def _merge(self) -> None:
        keys: list[int] = []
        values: list[int] = []
        for key, hit in self.recent.items():
            if isinstance(hit, list):
                keys.extend([key] * len(hit))
                values.extend(hit)
            else:
                keys.append(key)
                values.append(hit)
        all_keys = np.concatenate([self.keys, np.asarray(keys, dtype=np.int64)])
        all_values = np.concatenate([self.values, np.asarray(values, dtype=np.int64)])
        order = np.argsort(all_keys, kind="stable")  # equal keys keep their order (older first)
        self.keys, self.values = all_keys[order], all_values[order]
        self.recent.clear()
        self.recent_entries = 0


class NearIndex:
    """LSH over the kept documents' signatures: `match` finds the earliest kept document
    whose estimated Jaccard similarity reaches the threshold, `add` indexes a kept one."""

    def __init__(self, options: DedupSection, store: SignatureStore | None = None):
        datasketch = require("datasketch", "data")
        # datasketch's optimal banding for this threshold (its b bands of r rows).
        lsh = datasketch.MinHashLSH(
            threshold=options.threshold, num_perm=options.num_perm, weights=LSH_WEIGHTS
        )
        self.bands = [(i * lsh.r, (i + 1) * lsh.r) for i in range(lsh.b)]
        self.threshold = options.threshold
        self.num_perm = options.num_perm
        # (band, hash of the band's values) -> kept indices: one table for every band
        self.table = BandKeys()
        self.store = store or SignatureStore(options.num_perm)
        self.checked = 0  # candidates verified

    def __len__(self) -> int:
        return len(self.store)

    def band_keys(self, signatures: np.ndarray) -> np.ndarray:
        """(n, bands) int64: one key per band of each of `signatures` (n, num_perm), equal
        where the band's r values are equal; computed for a whole shard at once. (Two
        different bands sharing a key only add a candidate, which the Jaccard check drops.)"""
        bands, rows = len(self.bands), self.bands[0][1]
        values = signatures[:, : bands * rows].reshape(len(signatures), bands, rows)
        keys = np.repeat(np.arange(1, bands + 1, dtype=np.uint64)[None, :], len(signatures), 0)
        for r in range(rows):  # FNV-1a over the band's 32-bit values, then fmix64
            keys ^= values[:, :, r]
            keys *= np.uint64(_POLY)
        return fmix64(keys).view(np.int64)

    def match(
        self,
        signature: np.ndarray,
        keys: np.ndarray | None = None,
        merged: set[int] | None = None,
    ) -> tuple[int, float] | None:
        """(index, similarity) of the earliest kept match, or None. `keys`: the signature's
        band_keys row, when the caller has them; `merged`: its row of `table.merged_hits`
        for a batch (then every add until the batch ends is made with merge=False)."""
        keys = self.band_keys(signature[None, :])[0] if keys is None else keys
        found: set[int] = set()
        if merged is None:
            self.table.find(keys, found)
        else:
            found |= merged
            self.table.find_recent(keys, found)
        for index in sorted(found):
            self.checked += 1
            other = self.store.get(index)
            # datasketch's estimator: the share of equal minimum hashes.
            sim = float(np.count_nonzero(signature == other)) / self.num_perm
            if sim >= self.threshold:
                return index, sim
        return None

    def add(self, signature: np.ndarray, keys: np.ndarray | None = None, merge: bool = True) -> int:
        index = len(self.store)
        self.store.append(signature)
        keys = self.band_keys(signature[None, :])[0] if keys is None else keys
        self.table.add(keys, index, merge)
        return index


def near_dedup(
    docs: list[Document], options: DedupSection, *, seed: int
) -> tuple[list[Document], list[Removal], int]:
    """MinHash-LSH near-duplicate removal; returns (kept, removed, candidates verified)."""
    signer = Signer.seeded(options, seed)
    index = NearIndex(options)
    kept: list[Document] = []
    removed: list[Removal] = []
    for at, doc in enumerate(docs):
        if at % SIGN_BATCH == 0:
            batch = signer.sign_many([fold(d.text) for d in docs[at : at + SIGN_BATCH]])
        signature = batch[at % SIGN_BATCH]
        found = index.match(signature)
        if found is not None:
            kept_doc, sim = kept[found[0]], found[1]
            removed.append(Removal.of(doc, "near_dup", kept=kept_doc, similarity=round(sim, 4)))
            continue
        index.add(signature)
        kept.append(doc)
    return kept, removed, index.checked
