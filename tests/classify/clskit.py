"""Helpers for the classify tests: a small labelled CSV whose classes differ by vocabulary,
and tiny classify configs."""

from __future__ import annotations

import csv
import os
import random
import subprocess
import sys
from pathlib import Path

from testkit import TINY

# Each class has its own words (plus shared ones), so a tiny model can tell them apart.
WORDS = {
    "math": str.split("sum root square angle ratio integer prime sine cosine digit"),
    "files": str.split("path folder directory open read write close rename copy delete"),
    "net": str.split("socket host port request header server client packet address url"),
}
SHARED = str.split("the a of to and is returns value object given")

# A classify run from scratch on a CSV: TINY's model and cadence, no near-dedup (short
# synthetic texts), a test split.
TINY_CLASSIFY = [
    *TINY,
    "task=classify",
    "data.text_field=text",
    "data.label_field=label",
    "data.dedup.near=false",
    "data.split.val=0.2",
    "data.split.test=0.2",
    "train.batch_size=8",
]


def write_labelled_csv(
    path: Path, counts: dict[str, int], seed: int = 0, words: int = 12
) -> list[tuple[str, str, str]]:
    """A CSV (id, text, label) with counts[label] rows per class; returns the rows."""
    rng = random.Random(seed)
    rows = []
    for label, n in counts.items():
        vocab = WORDS.get(label, WORDS["math"]) + SHARED
        for i in range(n):
            text = " ".join(rng.choice(vocab) for _ in range(words)) + f" ({i})"
            rows.append((f"{label}-{i}", text, label))
    rng.shuffle(rows)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "label"])
        writer.writerows(rows)
    return rows


def genlab_cli(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    """The real `genlab` command in a new process (one torch thread, offline)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "GENLAB_CACHE_DIR": str(cwd / "cache")}  # fmt: skip
    command = [str(Path(sys.executable).with_name("genlab")), *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
