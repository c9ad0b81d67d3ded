"""The spool: a shard's cleaned documents on disk between the scan and the tokenize stage.

One record per document, in corpus order: a JSON header line `[id, source, position, label,
text bytes]` and then the text's UTF-8 bytes, unescaped. Only the short header goes through
JSON; a text is written as the bytes the scan encodes anyway (to count its size) and read
back with one `decode`, where a JSON line per document spent ~8 ms per MB of text escaping
and parsing it. A record's start offset lets one document be read back alone
(`read_at`), to name a kept document in a later duplicate's Removal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

_WRITE_BUFFER = 1 << 20  # bytes buffered per spool file (documents are written one by one)

Record = list[Any]  # [id, text, source, position, label]


class SpoolWriter:
    """Appends records to a new spool file; `offset` is where the next record starts."""

    def __init__(self, path: str | Path):
        self.file: IO[bytes] = open(path, "wb", buffering=_WRITE_BUFFER)  # noqa: SIM115
        self.offset = 0

    def write(self, doc_id: str, text_utf8: bytes, source: str, position: str,
              label: str | None) -> int:  # fmt: skip
        """Append one record; return the offset after it."""
        header = json.dumps([doc_id, source, position, label, len(text_utf8)], ensure_ascii=False)
        head = (header + "\n").encode("utf-8")
        self.file.write(head)
        self.file.write(text_utf8)
        self.offset += len(head) + len(text_utf8)
        return self.offset

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> SpoolWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read(f: IO[bytes], with_text: bool = True) -> Record | None:
    """The record at `f`'s position (None at the end); the text is skipped, not decoded,
    when `with_text` is false (the record then holds None for it)."""
    line = f.readline()
    if not line:
        return None
    doc_id, source, position, label, size = json.loads(line)
    if not with_text:
        f.seek(size, 1)
        return [doc_id, None, source, position, label]
    return [doc_id, f.read(size).decode("utf-8"), source, position, label]


def records(path: str | Path) -> Iterator[Record]:
    """The records of a spool file, in order: [id, text, source, position, label]."""
    with open(path, "rb") as f:
        while (record := _read(f)) is not None:
            yield record


def texts(path: str | Path, wanted: Sequence[bool]) -> Iterator[str]:
    """The texts of the records `wanted` flags (one flag per record, in order); a text not
    wanted is skipped without reading it."""
    with open(path, "rb") as f:
        for flag in wanted:
            record = _read(f, with_text=bool(flag))
            if record is None:
                return
            if flag:
                yield record[1]


def read_at(f: IO[bytes], start: int, with_text: bool = True) -> Record:
    """The record starting at byte `start` of an open spool file (its text None unless
    `with_text`: what a Removal names needs only the header)."""
    f.seek(start)
    record = _read(f, with_text)
    if record is None:  # pragma: no cover - offsets come from the writer
        raise EOFError(f"no spool record at byte {start}")
    return record
