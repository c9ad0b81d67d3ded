"""Append-only JSONL logs (metrics.jsonl, events.jsonl). Each record is flushed as written so
a killed run keeps everything it logged. NaN and inf are written as-is (NaN, Infinity):
hiding a non-finite loss is how runs go bad unnoticed."""

from __future__ import annotations

import json
import sys
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
    """All complete records. A line that is not a JSON object (a torn last line from a run
    killed mid-write, or damage) is skipped with one warning, never a crash."""
    if not path.is_file():
        return []
    records, damaged = [], 0
    for line in path.read_bytes().splitlines():
        try:
            record = json.loads(line.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif line.strip():
            damaged += 1
    if damaged:
        print(f"genlab: warning: skipped {damaged} damaged line(s) in {path}", file=sys.stderr)
    return records


def truncate_after(path: Path, step: int) -> None:
    """Drop records with step > `step` (a resumed run logs them again), atomically."""
    if not path.is_file():
        return
    kept = [r for r in read_jsonl(path) if _step(r) <= step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def _step(record: dict[str, Any]) -> int:
    step = record.get("step", 0)
    return step if isinstance(step, int) else 0
