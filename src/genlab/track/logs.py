"""Append-only JSONL logs (metrics.jsonl, events.jsonl). Each record is flushed as written so
a killed run keeps everything it logged. NaN and inf are written as-is (NaN, Infinity):
hiding a non-finite loss is how runs go bad unnoticed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from genlab.fileio import atomic_write_text


class JsonlWriter:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the run

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete records; a torn last line (killed mid-write) is ignored."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def truncate_after(path: Path, step: int) -> None:
    """Drop records with step > `step` (a resumed run logs them again), atomically."""
    if not path.is_file():
        return
    kept = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
