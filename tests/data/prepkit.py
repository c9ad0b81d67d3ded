"""Helpers for the data-preparation tests: a small JSONL corpus with planted duplicates."""

from __future__ import annotations

import json
import random
from pathlib import Path

_VOCAB = """parser token module stream buffer index window sample vector matrix layer kernel
signal memory cache thread socket packet record schema field value label batch
epoch weight gradient optimizer scheduler loss metric report split corpus"""
WORDS = _VOCAB.split()


def make_docs(n: int, words: int = 60, seed: int = 0) -> list[str]:
    """`n` distinct documents of random words (all well apart from each other)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) + f" doc{i}." for i in range(n)]


def near_copy(text: str, seed: int = 0) -> str:
    """`text` with one word changed: Jaccard similarity of word 3-grams well above 0.8."""
    words = text.split()
    words[len(words) // 2] = f"changed{seed}"
    return " ".join(words)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def planted_corpus(path: Path, n: int = 40) -> tuple[Path, dict[str, str]]:
    """A JSONL corpus (field "body", ids in "key") of `n` documents where every fifth has a
    near copy and every seventh an exact copy. Returns the path and {copy id: original id}."""
    rows, copies = [], {}
    for i, text in enumerate(make_docs(n)):
        rows.append({"key": f"d{i}", "body": text})
        if i % 5 == 0:
            rows.append({"key": f"d{i}-near", "body": near_copy(text, i)})
            copies[f"d{i}-near"] = f"d{i}"
        if i % 7 == 0:
            rows.append({"key": f"d{i}-exact", "body": text.upper()})
            copies[f"d{i}-exact"] = f"d{i}"
    rows.append({"key": "tiny", "body": "too short"})
    return write_jsonl(path, rows), copies


def jsonl_overrides(path: Path) -> list[str]:
    return [
        f"data.source={path}",
        "data.text_field=body",
        "data.id_field=key",
        "data.clean.min_words=5",
    ]
