"""Deduplication: exact (hash of normalised text) and near-duplicate (MinHash + LSH).

Runs before the train/val/test split, so a document and its near-copy can never land in
different splits (that would leak training text into evaluation). Documents are processed in
order and the FIRST document of each cluster is kept; every later member gets a Removal naming
the kept document.

Near-duplicates: each document becomes a set of shingles (word or character n-grams of its
normalised text), summarised by a seeded MinHash. MinHashLSH proposes candidate documents;
each candidate is then verified with the MinHash Jaccard estimate against the threshold, so
LSH's band collisions alone never remove a document (precision stays high). Only kept
documents are indexed, so every removed document matched a document that is really kept.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from genlab.config import DedupSection
from genlab.data.documents import Document
from genlab.data.provenance import Removal
from genlab.errors import require

_WORD = re.compile(r"\w+")
_SPACES = re.compile(r"\s+")


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


def normalize_for_hash(text: str) -> str:
    """Text as compared for exact duplicates: NFKC, case-folded, whitespace collapsed."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def exact_dedup(docs: Iterable[Document]) -> tuple[list[Document], list[Removal]]:
    """Keep the first document per normalised-text hash; the rest become `exact_dup`."""
    first: dict[bytes, Document] = {}
    kept: list[Document] = []
    removed: list[Removal] = []
    for doc in docs:
        key = hashlib.sha256(normalize_for_hash(doc.text).encode("utf-8")).digest()
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
        words = _WORD.findall(unicodedata.normalize("NFKC", text).casefold())
        if len(words) <= size:
            return {" ".join(words)} if words else set()
        return {" ".join(words[i : i + size]) for i in range(len(words) - size + 1)}
    flat = normalize_for_hash(text)
    if len(flat) <= size:
        return {flat} if flat else set()
    return {flat[i : i + size] for i in range(len(flat) - size + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    """True Jaccard similarity |a ∩ b| / |a ∪ b| (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def near_dedup(
    docs: list[Document], options: DedupSection, *, seed: int
) -> tuple[list[Document], list[Removal], int]:
    """MinHash-LSH near-duplicate removal; returns (kept, removed, candidates verified)."""
    datasketch = require("datasketch", "data")
    # One seeded template: every MinHash shares its permutations (comparable, and the
    # permutations are generated once instead of per document).
    template = datasketch.MinHash(num_perm=options.num_perm, seed=seed)
    # Weights favour recall in the banding (fewer missed pairs); the explicit Jaccard check
    # below removes the extra false candidates that this lets through.
    lsh = datasketch.MinHashLSH(
        threshold=options.threshold, num_perm=options.num_perm, weights=(0.3, 0.7)
    )
    kept: list[Document] = []
    removed: list[Removal] = []
    sketches: dict[int, object] = {}
    checked = 0
    for doc in docs:
        shingle_set = shingles(doc.text, options.shingle, options.shingle_size)
        mh = template.copy()  # empty sketch sharing the template's permutations
        if shingle_set:
            mh.update_batch([s.encode("utf-8") for s in shingle_set])
        best: tuple[int, float] | None = None  # (index in kept, similarity)
        for index in lsh.query(mh):
            checked += 1
            sim = float(mh.jaccard(sketches[index]))
            if sim >= options.threshold and (best is None or index < best[0]):
                best = (index, sim)  # earliest kept match = the cluster's first document
        if best is not None:
            removed.append(
                Removal.of(doc, "near_dup", kept=kept[best[0]], similarity=round(best[1], 4))
            )
            continue
        index = len(kept)
        kept.append(doc)
        sketches[index] = mh
        lsh.insert(index, mh, check_duplication=False)
    return kept, removed, checked
