"""Benchmark: near-duplicate detection quality and speed, and memmap window throughput.

Corpus: documents of words drawn (with their real frequencies) from CPython's
`pydoc_data.topics` text. Some documents get one edited copy (word swaps, insertions,
deletions, replacements) at a controlled Jaccard similarity of word-shingle sets; each copy's
true Jaccard with its original is measured exactly, and it "should be removed" exactly when
that true Jaccard is >= the threshold. Precision / recall / F1 count the copies (and
originals) that `deduplicate` removes as near duplicates.

Rows "clear pairs" leave out copies within +-0.05 of the threshold (where a 128-permutation
MinHash estimate, std ~0.035, is a coin flip by design); "all pairs" include them.

Run: .venv/bin/python benchmarks/dedup.py [--docs 3000] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from genlab.config import DedupSection
from genlab.data.dedup import deduplicate, jaccard, shingles
from genlab.data.documents import Document
from genlab.data.storage import TokenFile, windows_from_tensor, write_manifest, write_split

BAND = 0.05  # half-width of the "borderline" band around the threshold


def vocabulary() -> tuple[list[str], list[int]]:
    """Words of the CPython docs topics with their counts (a realistic Zipf-like mix)."""
    from pydoc_data.topics import topics

    counts = Counter(w.lower() for text in topics.values() for w in re.findall(r"[A-Za-z]+", text))
    words = sorted(counts)
    return words, [counts[w] for w in words]


def edit_to(
    words: list[str], target: float, rng: random.Random, vocab: list[str], size: int
) -> tuple[list[str], float]:
    """Apply random edits until the shingle Jaccard with the original drops to <= target."""
    original = shingles(" ".join(words), "word", size)
    out = list(words)
    sim = 1.0
    while sim > target:
        op = rng.choice(("swap", "insert", "delete", "replace"))
        i = rng.randrange(len(out) - 1)
        if op == "swap":
            out[i], out[i + 1] = out[i + 1], out[i]
        elif op == "insert":
            out.insert(i, rng.choice(vocab))
        elif op == "delete" and len(out) > 20:
            del out[i]
        else:
            out[i] = rng.choice(vocab)
        sim = jaccard(original, shingles(" ".join(out), "word", size))
    return out, sim


def make_corpus(n_docs: int, seed: int, threshold: float, size: int):
    """Originals first, then edited copies in random order (so the original is 'first')."""
    rng = random.Random(seed)
    vocab, weights = vocabulary()
    originals, copies, truth = [], [], {}
    for i in range(n_docs):
        words = rng.choices(vocab, weights=weights, k=rng.randint(80, 300))
        originals.append(Document(id=f"o{i}", text=" ".join(words), source="bench"))
        if rng.random() < 0.5:
            # a third clear positives, a third clear negatives, a third near the threshold
            band = rng.choice(("pos", "neg", "edge"))
            lo, hi = {
                "pos": (threshold + BAND, 0.99),
                "neg": (0.3, threshold - BAND),
                "edge": (threshold - BAND, threshold + BAND),
            }[band]
            edited, sim = edit_to(words, rng.uniform(lo, hi), rng, vocab, size)
            copies.append(Document(id=f"c{i}", text=" ".join(edited), source="bench"))
            truth[f"c{i}"] = sim
    rng.shuffle(copies)
    return originals + copies, truth


def score(removed_ids: set[str], truth: dict[str, float], threshold: float, clear: bool):
    tp = fp = fn = 0
    for doc_id in removed_ids:
        if doc_id.startswith("o"):
            fp += 1  # an original was removed: always wrong (copies come after it)
    for doc_id, sim in truth.items():
        if clear and abs(sim - threshold) < BAND:
            continue
        should = sim >= threshold
        did = doc_id in removed_ids
        tp += should and did
        fp += (not should) and did
        fn += should and not did
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f1, tp + fn


def windows_per_s(fn, n_tokens: int, block: int, batch: int, seconds: float = 1.5) -> float:
    rng = np.random.default_rng(0)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(rng.integers(0, n_tokens - block - 1, size=batch).tolist())
        done += batch
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=3000, help="original documents")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rows = []
    settings = [("default", DedupSection()), ("num_perm=256", DedupSection(num_perm=256))]
    for name, opts in settings:
        docs, truth = make_corpus(args.docs, args.seed, opts.threshold, opts.shingle_size)
        t0 = time.perf_counter()
        result = deduplicate(docs, opts, seed=0)
        elapsed = time.perf_counter() - t0
        removed = {r.id for r in result.removed if r.reason == "near_dup"}
        for clear in (True, False):
            p, r, f1, positives = score(removed, truth, opts.threshold, clear)
            label = f"near-dup {name}, {'clear pairs' if clear else 'all pairs'}"
            rows.append(
                (
                    label,
                    f"{len(docs)} docs / {positives} dups",
                    f"{p:.3f}",
                    f"{r:.3f}",
                    f"{f1:.3f}",
                    f"{len(docs) / elapsed:,.0f} docs/s",
                )
            )

    n_tokens, block, batch = 20_000_000, 256, 64
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 50_000, size=n_tokens, dtype=np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        entry = write_split(Path(tmp), "train", [tokens], vocab_size=50_257)
        write_manifest(Path(tmp), {"train": entry}, config={}, vocab_size=50_257)
        tf = TokenFile.open(Path(tmp), "train")
        in_memory = torch.from_numpy(tokens)
        mm = windows_per_s(lambda s: tf.windows(s, block), n_tokens, block, batch)
        mem = windows_per_s(
            lambda s: windows_from_tensor(in_memory, s, block), n_tokens, block, batch
        )
    shape = f"{n_tokens / 1e6:.0f}M tokens, B={batch}, T={block}"
    rows.append(("memmap windows (uint16 file)", shape, "", "", "", f"{mm:,.0f} windows/s"))
    rows.append(("in-memory int64 tensor", shape, "", "", "", f"{mem:,.0f} windows/s"))

    header = ("case", "size", "precision", "recall", "F1", "throughput")
    widths = [max(len(str(r[i])) for r in [*rows, header]) for i in range(len(header))]
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths)))


if __name__ == "__main__":
    main()
